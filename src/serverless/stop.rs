//! Stopping a run: `s3-fanout cancel`, and fail-fast past the failure
//! threshold. One mark in the run table says a run is stopped and why;
//! listers and copiers look at it and stop, and the state machine ends the
//! run through its report (`Cancelled`, `Stopped`).
//!
//! Items of the run table (beside [`super::counters`]'s):
//!
//! - `pk = RUN#stop, sk = stop`: the mark, written once (on condition that
//!   it does not exist), with `reason` ([`StopReason`] as JSON) and
//!   `at_ms`. Its own partition: every function of the run reads it, and
//!   the counter slots under `pk = RUN` take the run's writes.
//! - `pk = RUN#stop, sk = failures`: a fail-fast run's failures, added as
//!   each happens (not at its batch's end), so a copier sees the threshold
//!   passed while the other copiers' batches still run.
//!
//! What a look at the mark costs: an invocation reads it once when it
//! starts (before it copies or lists anything), then again at most every
//! [`check_interval`] (1 s by default) while it runs, in the background: a
//! cached check, not a read per object. One strongly consistent read of a
//! small item is one read unit ($0.125 a million on demand): a copier
//! invocation of a minute costs 60, and 300 copiers for the 5 minutes of a
//! 100M first copy 90,000, a cent. So the fleet stops within about a
//! second of the mark: a copier starts no object after it sees the mark,
//! aborts the multipart uploads it has open, and settles its batch with
//! what it did not copy counted `dropped`; a lister sends nothing more and
//! counts its range dropped. Copies already sent to S3 when the mark is
//! seen finish: at most one invocation's tasks in flight each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use tokio_util::sync::CancellationToken;

use crate::base::error::{SyncError, classify};
use crate::report::StopReason;
use crate::report::emf;
use crate::serverless::counters::RunCounters;

/// How often a running invocation looks at the mark again
/// (`S3_FANOUT_STOP_CHECK_MS`, default 1,000).
pub fn check_interval() -> Duration {
    let ms = std::env::var("S3_FANOUT_STOP_CHECK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u64);
    Duration::from_millis(ms.max(50))
}

/// A run's stop mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopMark {
    pub reason: StopReason,
    /// When it was written (milliseconds since the epoch).
    pub at_ms: i64,
}

/// What [`mark`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// This call stopped the run.
    Now(StopMark),
    /// The run was stopped before, by this mark.
    Before(StopMark),
}

impl Marked {
    pub fn mark(&self) -> StopMark {
        match self {
            Marked::Now(mark) | Marked::Before(mark) => *mark,
        }
    }
}

fn key(run_id: &str, sk: &str) -> std::collections::HashMap<String, AttributeValue> {
    std::collections::HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("{run_id}#stop"))),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

/// How long the mark outlives its run (as the counters do).
fn expires_at() -> AttributeValue {
    AttributeValue::N((emf::now_ms() / 1000 + 30 * 24 * 3600).to_string())
}

/// Stop `run_id` for `reason`, once: the first mark stands.
pub async fn mark(
    counters: &RunCounters,
    run_id: &str,
    reason: StopReason,
) -> Result<Marked, SyncError> {
    let reason_json = serde_json::to_string(&reason).expect("a reason serialises");
    let at_ms = emf::now_ms();
    let mut put = counters
        .client()
        .put_item()
        .table_name(counters.table())
        .item("reason", AttributeValue::S(reason_json))
        .item("at_ms", AttributeValue::N(at_ms.to_string()))
        .item("expires_at", expires_at())
        .condition_expression("attribute_not_exists(pk)");
    for (name, value) in key(run_id, "stop") {
        put = put.item(name, value);
    }
    match put.send().await {
        Ok(_) => Ok(Marked::Now(StopMark { reason, at_ms })),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
        {
            match read(counters, run_id).await? {
                Some(mark) => Ok(Marked::Before(mark)),
                None => Err(SyncError::Report(format!(
                    "run {run_id}: the stop mark exists and cannot be read back"
                ))),
            }
        }
        Err(err) => Err(SyncError::s3(
            "marking the run stopped (DynamoDB)",
            classify(&err),
        )),
    }
}

/// The run's stop mark, if it has one: one strongly consistent read.
pub async fn read(counters: &RunCounters, run_id: &str) -> Result<Option<StopMark>, SyncError> {
    let got = counters
        .client()
        .get_item()
        .table_name(counters.table())
        .set_key(Some(key(run_id, "stop")))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| SyncError::s3("reading the run's stop mark (DynamoDB)", classify(&e)))?;
    let Some(item) = got.item() else {
        return Ok(None);
    };
    let reason = item
        .get("reason")
        .and_then(|v| v.as_s().ok())
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| SyncError::Report(format!("run {run_id}: an unreadable stop mark")))?;
    let at_ms = item
        .get("at_ms")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    Ok(Some(StopMark { reason, at_ms }))
}

/// Add `n` failures to a fail-fast run's count; returns the count after.
pub async fn add_failures(counters: &RunCounters, run_id: &str, n: u64) -> Result<u64, SyncError> {
    let updated = counters
        .client()
        .update_item()
        .table_name(counters.table())
        .set_key(Some(key(run_id, "failures")))
        .update_expression("SET #e = :e ADD #f :n")
        .expression_attribute_names("#e", "expires_at")
        .expression_attribute_names("#f", "failures")
        .expression_attribute_values(":e", expires_at())
        .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .map_err(|e| SyncError::s3("counting a failure (DynamoDB)", classify(&e)))?;
    Ok(updated
        .attributes()
        .and_then(|a| a.get("failures"))
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(n))
}

/// What a watch knows, shared with whatever may stop the run from inside
/// the invocation (fail-fast).
#[derive(Clone, Default)]
pub struct StopHandle {
    token: CancellationToken,
    mark: Arc<Mutex<Option<StopMark>>>,
}

impl StopHandle {
    /// The run is stopped by `mark`: stop here at once, without waiting
    /// for the next look.
    pub fn stopped(&self, mark: StopMark) {
        let mut seen = self.mark.lock().expect("stop mark lock");
        if seen.is_none() {
            *seen = Some(mark);
        }
        self.token.cancel();
    }

    /// Look at the mark once.
    async fn look(&self, counters: &RunCounters, run_id: &str) {
        match read(counters, run_id).await {
            Ok(Some(found)) => {
                tracing::warn!(run_id, reason = %found.reason.describe(), "the run is stopped: starting nothing more");
                self.stopped(found);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(run_id, error = %err, "could not read the run's stop mark; going on");
            }
        }
    }
}

/// An invocation's view of one run's stop mark: read when it starts, then
/// every [`check_interval`] in the background until the invocation ends
/// (dropping the watch stops the reads). Its token is cancelled once the
/// run is seen stopped, or once this invocation stops it.
pub struct StopWatch {
    handle: StopHandle,
    poller: tokio::task::AbortHandle,
}

impl StopWatch {
    /// Read the mark, then keep looking. A read that fails is logged and
    /// taken as "not stopped": the run goes on, as it did before marks.
    pub async fn start(counters: &RunCounters, run_id: &str) -> Self {
        let handle = StopHandle::default();
        handle.look(counters, run_id).await;
        let every = check_interval();
        let poller = {
            let (counters, run_id, handle) = (counters.clone(), run_id.to_owned(), handle.clone());
            tokio::spawn(async move {
                while !handle.token.is_cancelled() {
                    tokio::select! {
                        _ = handle.token.cancelled() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                    handle.look(&counters, &run_id).await;
                }
            })
            .abort_handle()
        };
        StopWatch { handle, poller }
    }

    /// Cancelled once the run is stopped.
    pub fn token(&self) -> CancellationToken {
        self.handle.token.clone()
    }

    pub fn is_stopped(&self) -> bool {
        self.handle.token.is_cancelled()
    }

    /// The mark seen, if any.
    pub fn mark(&self) -> Option<StopMark> {
        *self.handle.mark.lock().expect("stop mark lock")
    }

    pub fn handle(&self) -> StopHandle {
        self.handle.clone()
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        self.poller.abort();
    }
}
