//! A bucket as a side of a sync: listing in key order, folders, the
//! preflight, conditional copies (single, multipart, streamed between
//! endpoints), HEADs and batched deletes.

pub mod checksum_refusal;
pub mod copier;
pub mod copy;
pub mod delete;
pub mod folders;
pub mod head;
pub mod key_walk;
pub mod list_page;
pub mod list_target;
pub mod listing;
pub mod listing_versions;
pub mod multipart;
pub mod page_reader;
pub mod preflight;
pub mod stream;
pub mod version_page;
