//! Plain records and S3's rules, shared by every layer above: what an
//! object and a side are ([`entry`]), where things are ([`location`]), the
//! key space and its cuts ([`keyspace`]), ETag shapes and part limits
//! ([`s3_shape`]), the run's options ([`options`], [`filter`]), prices
//! ([`prices`]), the serverless run's poll pacing ([`polling`]) and a
//! versioned bucket at a point in time ([`versions`]). No I/O happens here.

pub mod checksum;
pub mod deadlines;
pub mod entry;
pub mod filter;
pub mod history;
pub mod keyspace;
pub mod location;
pub mod options;
pub mod polling;
pub mod prices;
pub mod s3_shape;
pub mod versions;
