//! The sync itself, runtime-neutral.

pub mod diff;
pub mod pieces;
pub mod pipeline;
pub mod shards;
pub mod verify;
pub mod worker;
pub mod written;
