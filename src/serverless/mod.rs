//! The serverless runtime: the same pipeline, fanned out over Lambda, SQS
//! and Step Functions (`statemachine/sync.asl.json`, `infra/template.yaml`).
//!
//! ```text
//!  execution input ─▶ planner ─▶ shards ─▶ range tasks ─▶ range queue ─ ESM(ListingConcurrency) ─┐
//!          (engine/shards.rs)          (ranges.rs)                                         │
//!  lister (lister.rs, streams.rs: ListerStreams tasks at once): lease, list, merge_join, decide ◀┘
//!      ├─ SendMessageBatch ─▶ work queue ─▶ copier (copier.rs): CopyObject / UploadPartCopy,
//!      │                          │ ESM     batch counted done, once
//!      │                          └─ DLQ
//!      ├─ no task waiting: the rest of its range split off (engine/pieces.rs::bisect) ─▶ range queue
//!      └─ deadline: the range's next task ─▶ range queue; end: the range counted done
//!  run counters (counters.rs, DynamoDB): ranges and batches sent and done, outcomes, leases, timeline
//!  progress: ranges, then batches, done == sent? two Queries (reporter.rs) ─▶ VALIDATE: the same, in
//!  validate mode, over the ranges that wrote ─▶ REPORT: counters + checkpoints + rows into summary.json
//!  + failures.csv ─▶ Choice on the threshold
//! ```
//!
//! Every function is a handler here; `functions/<name>` only wires one to
//! the Lambda runtime. State that outlives an invocation lives in the run's
//! folder of the report bucket ([`store`]): the lister checkpoints, the
//! batches they sent, report rows. What is counted lives in the run
//! counters ([`counters`]): batches sent and done, each once, and their
//! outcomes. That makes progress exact (batches done against batches
//! sent, not approximate queue depth) at the same cost for any number of
//! batches, and keeps the state machine's own payloads small. Everything the functions
//! send each other or leave in that folder is one of the records of
//! [`contract`], whose serde names are the wire format.

pub mod batch;
pub mod contract;
#[cfg(feature = "control")]
pub mod control;
pub mod copier;
pub mod counters;
pub mod env;
pub mod events;
pub mod input;
pub mod lister;
pub mod parts;
pub mod planner;
pub mod proofs;
pub mod ranges;
pub mod replicator;
pub mod reporter;
pub mod stop;
pub mod store;
pub mod streams;

pub use env::FunctionEnv;

use std::time::{Duration, SystemTime};

use lambda_runtime::Diagnostic;

use crate::base::error::SyncError;

/// JSON logs, as CloudWatch Logs Insights wants them; `RUST_LOG` filters.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .without_time() // CloudWatch stamps every line
        .try_init();
}

/// A failed invocation carries the retry class as its error type, which is
/// what the state machine's `Retry` (`Retryable`) and `Catch` match on.
impl From<SyncError> for Diagnostic {
    fn from(err: SyncError) -> Self {
        Diagnostic {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// When an invocation with this deadline should stop starting work: a fifth
/// of its remaining time (2 s to 2 min) is kept for finishing what runs and
/// writing the outcome. Work cut off by Lambda's timeout would count nothing
/// and hold its message until the visibility timeout.
pub fn stop_starting_at(deadline: SystemTime) -> SystemTime {
    let remaining = deadline
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    deadline
        .checked_sub((remaining / 5).clamp(Duration::from_secs(2), Duration::from_secs(120)))
        .unwrap_or(deadline)
}
