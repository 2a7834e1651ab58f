//! A bucket as a side of a sync.

pub mod copier;
pub mod copy;
pub mod delete;
pub mod folders;
pub mod head;
pub mod listing;
pub mod multipart;
pub mod preflight;
pub mod stream;
