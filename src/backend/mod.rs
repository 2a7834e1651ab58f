//! The two kinds of side a sync has, a bucket ([`s3`]) and a directory
//! ([`local`]), behind what the engine uses of them: [`side::Listing`]
//! lists a range, finds folders and fills content ETags; [`transfer::Mover`]
//! moves one object whichever way the run goes; [`outcome`] is what that
//! ends in. The bucket backend never imports the directory backend; the
//! directory backend uses the bucket's request code (an upload is a PUT).

pub mod ledger;
pub mod local;
pub mod outcome;
pub mod s3;
pub mod side;
pub mod transfer;
