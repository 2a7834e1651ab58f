//! The bottom layer: what every other layer may use, and nothing here knows
//! about syncing. Errors carry their retry class ([`error`]); every AWS
//! client comes from [`client`].

pub mod allocator;
pub mod client;
pub mod concurrency;
pub mod error;
pub mod format;
pub mod metrics;
pub mod rate_limit;
