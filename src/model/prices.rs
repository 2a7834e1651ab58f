//! The price table: one JSON data file, with the date and region its prices
//! are from (`prices-us-east-1.json`, built in; `plan --prices FILE` reads
//! another in the same shape). `plan` estimates costs with it, and a run
//! weighs HEADs against a re-listing with its built-in prices
//! ([`crate::engine::written`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::base::error::SyncError;

/// The built-in table.
const BUILT_IN: &str = include_str!("prices-us-east-1.json");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PriceTable {
    #[serde(default)]
    pub about: String,
    /// When the prices were read from AWS's pages.
    pub date: String,
    pub region: String,
    pub currency: String,
    pub s3: S3Prices,
    pub lambda: LambdaPrices,
    pub sqs: SqsPrices,
    pub step_functions: StepFunctionsPrices,
    pub dynamodb: DynamoDbPrices,
    pub assumptions: Assumptions,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Prices {
    pub tiers_per_1000_requests: BTreeMap<String, f64>,
    /// Operation name to tier; an operation missing here is an error, not
    /// a silent zero.
    pub operation_tiers: BTreeMap<String, String>,
    pub transfer_per_gb: TransferPrices,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferPrices {
    pub same_region: f64,
    pub inter_region: f64,
    pub to_internet: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LambdaPrices {
    pub per_million_requests: f64,
    /// By architecture: `x86_64`, `arm64`.
    pub per_gb_second: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SqsPrices {
    pub per_million_requests: f64,
    /// SQS bills each 64 KiB of a request's payload as one request.
    pub request_chunk_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepFunctionsPrices {
    pub per_1000_state_transitions: f64,
}

/// On-demand capacity: a transactional write costs two write units per
/// item of up to 1 KB, a strongly consistent read one read unit per 4 KB.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DynamoDbPrices {
    pub per_million_write_request_units: f64,
    pub per_million_read_request_units: f64,
}

/// What a plan cannot measure; each estimate that uses one says so.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assumptions {
    /// One CopyObject, PUT or DELETE of a small object, end to end.
    pub copy_request_ms: f64,
    /// Bytes one server-side copy request (or part) moves per second.
    pub server_side_copy_mib_per_second: f64,
    pub head_request_ms: f64,
    /// Keys a second one sequential listing of one side manages
    /// (FIELD.md: 1,500–2,000). A lister's stream lists both sides at once.
    pub list_keys_per_second: f64,
    /// CPU a lister spends on a key listed (either side): parsing its page,
    /// the merge-join and the decision (measured: `scripts/bench-lister-cpu.sh`).
    pub lister_cpu_us_per_key: f64,
    /// A warm function's overhead per invocation.
    pub function_start_ms: f64,
    pub lister_memory_mb: f64,
    pub copier_memory_mb: f64,
    pub planner_memory_mb: f64,
    pub reporter_memory_mb: f64,
    /// ReceiveMessage calls an SQS event source mapping makes while idle
    /// (about five pollers long-polling 20 s each).
    pub esm_idle_receives_per_minute: f64,
    /// Invocations an SQS event source mapping starts with when messages
    /// arrive, and how many more it adds a minute while they keep coming,
    /// up to its MaximumConcurrency ("Lambda starts processing five batches
    /// at a time with five concurrent invocations [...] increases the number
    /// of processes that are reading batches by up to 300 more instances per
    /// minute", Lambda developer guide, "Configuring scaling behavior for
    /// SQS event source mappings").
    pub esm_start_invocations: f64,
    pub esm_added_invocations_per_minute: f64,
    /// The lister's timeout: its tasks list until
    /// `model::deadlines::stop_margin` before it, and its free streams take
    /// tasks until `pull_margin` before it.
    pub lister_timeout_secs: f64,
    /// Writes (PUT, COPY, DELETE) per second S3 takes under one partitioned
    /// prefix; a prefix new to load starts as one partition, and S3 splits
    /// it only after sustained load (FIELD.md; AWS, "Best practices design
    /// patterns: optimizing Amazon S3 performance").
    pub s3_writes_per_second_per_prefix: f64,
}

impl PriceTable {
    pub fn built_in() -> Self {
        serde_json::from_str(BUILT_IN).expect("the built-in price table parses")
    }

    /// The built-in table, parsed once.
    pub fn built_in_shared() -> &'static PriceTable {
        static TABLE: std::sync::OnceLock<PriceTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(PriceTable::built_in)
    }

    /// The price of 1,000 requests of one S3 operation, if the table has it.
    pub fn s3_request_price(&self, operation: &str) -> Option<f64> {
        let tier = self.s3.operation_tiers.get(operation)?;
        self.s3.tiers_per_1000_requests.get(tier).copied()
    }

    pub fn from_file(path: &Path) -> Result<Self, SyncError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SyncError::Config(format!("--prices {}: {e}", path.display())))?;
        let table: PriceTable = serde_json::from_str(&text).map_err(|e| {
            SyncError::Config(format!(
                "--prices {}: not a price table like s3-fanout's built-in one: {e}",
                path.display()
            ))
        })?;
        table
            .check()
            .map_err(|why| SyncError::Config(format!("--prices {}: {why}", path.display())))?;
        Ok(table)
    }

    fn check(&self) -> Result<(), String> {
        for (operation, tier) in &self.s3.operation_tiers {
            if !self.s3.tiers_per_1000_requests.contains_key(tier) {
                return Err(format!("{operation} is priced in an unknown tier {tier:?}"));
            }
        }
        // An event source that never starts an invocation would model a run
        // that never ends.
        let a = &self.assumptions;
        if !(a.esm_start_invocations >= 1.0 && a.esm_added_invocations_per_minute > 0.0) {
            return Err(
                "esm_start_invocations must be at least 1 and esm_added_invocations_per_minute above 0"
                    .into(),
            );
        }
        Ok(())
    }

    /// The cost of S3 requests, by operation. An operation without a price
    /// is an error: an estimate that silently left it out would be wrong.
    pub fn s3_requests(&self, requests: &BTreeMap<String, u64>) -> Result<f64, SyncError> {
        let mut total = 0.0;
        for (operation, count) in requests {
            let price = self
                .s3
                .operation_tiers
                .get(operation)
                .and_then(|tier| self.s3.tiers_per_1000_requests.get(tier))
                .ok_or_else(|| {
                    SyncError::Config(format!(
                        "the price table ({} {}) has no price for S3 {operation}: add it to operation_tiers",
                        self.region, self.date
                    ))
                })?;
            total += *count as f64 / 1000.0 * price;
        }
        Ok(total)
    }

    pub fn lambda_gb_second(&self, architecture: &str) -> Result<f64, SyncError> {
        self.lambda
            .per_gb_second
            .get(architecture)
            .copied()
            .ok_or_else(|| {
                SyncError::Config(format!(
                    "the price table has no Lambda price for architecture {architecture:?}"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_prices_every_operation_the_tool_sends() {
        let table = PriceTable::built_in();
        table.check().unwrap();
        assert_eq!(table.region, "us-east-1");
        let every: BTreeMap<String, u64> = [
            "ListObjectsV2",
            "CopyObject",
            "UploadPartCopy",
            "UploadPart",
            "PutObject",
            "GetObject",
            "HeadObject",
            "GetObjectTagging",
            "CreateMultipartUpload",
            "CompleteMultipartUpload",
            "ListMultipartUploads",
            "DeleteObject",
            "DeleteObjects",
        ]
        .iter()
        .map(|op| (op.to_string(), 1000))
        .collect();
        let cost = table.s3_requests(&every).unwrap();
        // 8 at $0.005, 3 at $0.0004, DELETEs free.
        assert!((cost - (8.0 * 0.005 + 3.0 * 0.0004)).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn an_unpriced_operation_is_an_error_not_a_zero() {
        let table = PriceTable::built_in();
        let unknown = BTreeMap::from([("RestoreObject".to_string(), 1)]);
        let err = table.s3_requests(&unknown).unwrap_err().to_string();
        assert!(err.contains("RestoreObject"), "{err}");
    }

    #[test]
    fn an_event_source_that_never_scales_is_refused() {
        let mut table = PriceTable::built_in();
        table.assumptions.esm_added_invocations_per_minute = 0.0;
        assert!(table.check().unwrap_err().contains("esm_added"));
        table.assumptions.esm_added_invocations_per_minute = 300.0;
        table.assumptions.esm_start_invocations = 0.0;
        assert!(table.check().unwrap_err().contains("esm_start"));
    }
}
