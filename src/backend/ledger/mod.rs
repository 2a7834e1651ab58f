//! The ledger of proven pairs: the pairs whose ETags differ but whose
//! content is proven equal (a KMS copy, a checksum comparison), so the next
//! run proves them again from the listings alone, with no request.
//!
//! - [`proven`]: one entry, and the chunk and manifest formats.
//! - [`store`]: where a ledger lives: a directory or an S3 prefix.
//! - [`read`]: a run's view of the last committed ledger, read as a third
//!   sorted stream beside the two listings, one cursor per listed piece.
//! - [`mod@write`]: the next ledger, gathered during a run and committed at
//!   its end, beside the old one, which stays valid until the switch.
//! - [`journal`]: pairs the replicator proved between runs, appended one
//!   object per invocation and folded into a run's view of the ledger.
//! - [`in_order`]: the next ledger written straight to chunks by a walk
//!   in key order (a serverless lister's shard), with no spool; the run's
//!   report names every shard's chunks in one manifest ([`write::switch_to`]).
//!
//! A ledger entry only ever *saves* requests: a pair whose ETags both equal
//! its entry is equal, and a change on either side changes an ETag, so the
//! entry stops matching. A lost, stale or damaged ledger costs HEADs,
//! never a wrong "equal".

pub mod in_order;
pub mod journal;
pub mod proven;
pub mod read;
pub mod store;
pub mod write;
