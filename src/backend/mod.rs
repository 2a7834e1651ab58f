//! The two kinds of side a sync has, a bucket and a directory.

pub mod local;
pub mod outcome;
pub mod s3;
pub mod side;
pub mod transfer;
