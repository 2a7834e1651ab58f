//! The sync itself, runtime-neutral: it sees each side only through
//! [`crate::backend::side::Listing`] and moves objects only through
//! [`crate::backend::transfer::Mover`].
//!
//! [`pieces`] lists a range as pieces at once, each a [`diff::merge_join`]
//! whose pairs go to a sink; [`diff::decide`] turns a pair into an action,
//! and [`prove`] settles pairs whose ETags cannot decide (the ledger of
//! proven pairs, then checksums); [`worker`] applies one action and records it; [`verify`] checks what was
//! written ([`written`] says how); [`pipeline`] runs it all in one process;
//! [`shards`] cuts a range up front for the serverless fan-out;
//! [`histories`] copies whole version histories (`--all-versions`).

pub mod diff;
pub mod histories;
pub mod pieces;
pub mod pipeline;
pub mod prove;
pub mod shards;
pub mod verify;
pub mod worker;
pub mod written;
