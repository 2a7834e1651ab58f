//! A bucket as a side of a sync: listing in key order, folders, the
//! preflight, conditional copies (single, multipart, streamed between
//! endpoints), HEADs and batched deletes.

pub mod checksum_refusal;
pub mod copier;
pub mod copy;
pub mod delete;
pub mod folders;
pub mod head;
pub mod list_page;
pub mod listing;
pub mod multipart;
pub mod preflight;
pub mod stream;
