//! A bucket as a side of a sync.

pub mod copy;
pub mod folders;
pub mod listing;
pub mod multipart;
pub mod preflight;
pub mod stream;
