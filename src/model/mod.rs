//! Plain records and S3's rules, shared by every layer above: what an
//! object and a side are ([`entry`]), where things are ([`location`]), the
//! key space and its cuts ([`keyspace`]), ETag shapes and part limits
//! ([`s3_shape`]), the run's options ([`options`], [`filter`]) and prices
//! ([`prices`]). No I/O happens here.

pub mod checksum;
pub mod entry;
pub mod filter;
pub mod keyspace;
pub mod location;
pub mod options;
pub mod prices;
pub mod s3_shape;
