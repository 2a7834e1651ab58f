//! Plain records and S3's rules, shared by every layer above.

pub mod entry;
pub mod filter;
pub mod keyspace;
pub mod location;
pub mod options;
pub mod prices;
pub mod s3_shape;
