//! The sync itself, runtime-neutral.

pub mod diff;
pub mod pieces;
pub mod pipeline;
pub mod split;
pub mod verify;
pub mod worker;
