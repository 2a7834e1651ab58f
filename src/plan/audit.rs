//! What `s3-fanout check` would cost: its listings (the plan's own,
//! measured) and the HEADs it makes to prove pairs.
//!
//! - `check` HEADs the pairs the listings cannot prove and the ledger does
//!   not: same size, ETags that differ (KMS, other part layouts), the ones
//!   the sync would compare by checksum, update as newer, or skip as
//!   unverified.
//! - `check --checksum` HEADs every pair of equal size, equal ETags
//!   included.
//!
//! A HEAD of each side per pair; a directory's side is read, not asked.

use serde::Serialize;

use crate::base::error::SyncError;
use crate::model::options::SyncOptions;
use crate::model::prices::PriceTable;
use crate::plan::requests::{Requests, add, verify_heads_per_key};
use crate::report::Summary;

/// One way of running `check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckEstimate {
    /// Pairs proven by their stored checksums.
    pub pairs_headed: u64,
    pub s3_requests: Requests,
    pub total_usd: f64,
    pub wall_secs: f64,
}

/// `check` and `check --checksum`, from the plan's dry run and the pairs
/// of equal size whose ETags differ that it updates as newer
/// (`same_size_updates`).
pub fn estimates(
    options: &SyncOptions,
    dry: &Summary,
    same_size_updates: u64,
    prices: &PriceTable,
) -> Result<(CheckEstimate, CheckEstimate), SyncError> {
    let c = &dry.counts;
    let unproven = c.plan_compare + c.skip_unverified + same_size_updates;
    let every_pair = unproven + c.skip_equal;
    let estimate = |pairs: u64| -> Result<CheckEstimate, SyncError> {
        let listings = dry.requests.get("ListObjectsV2").copied().unwrap_or(0);
        let mut requests = Requests::new();
        add(&mut requests, "ListObjectsV2", listings);
        let heads = pairs * verify_heads_per_key(options.transfer);
        add(&mut requests, "HeadObject", heads);
        Ok(CheckEstimate {
            pairs_headed: pairs,
            total_usd: prices.s3_requests(&requests)?,
            wall_secs: dry.duration_secs
                + heads as f64 * prices.assumptions.head_request_ms
                    / 1000.0
                    / options.concurrency.max(1) as f64,
            s3_requests: requests,
        })
    };
    Ok((estimate(unproven)?, estimate(every_pair)?))
}
