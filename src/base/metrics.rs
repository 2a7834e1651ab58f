//! Request counting by S3 operation.
//!
//! Every HTTP attempt is counted (retries included, because S3 bills them).
//! The counter is an SDK interceptor installed by the client factory, so no
//! stage has to remember to count; the report prints the totals, and the
//! tests use them to prove that a no-op re-run makes nothing but listings.
//! It also counts throttling answers (503 SlowDown, 429), which is what the
//! adaptive copy concurrency ([`crate::base::concurrency`]) listens to, and
//! retries (second and later attempts of one request), which the report
//! shows: a run that succeeded only by retrying should say so.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Shared, cheaply cloned counter of requests per operation name.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    throttled: Arc<AtomicU64>,
    retried: Arc<AtomicU64>,
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, operation: &str) {
        let mut counts = self.counts.lock().expect("request counter poisoned");
        *counts.entry(operation.to_owned()).or_default() += 1;
    }

    /// A copy of the current counts, sorted by operation name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .expect("request counter poisoned")
            .clone()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Responses so far that asked us to slow down.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Attempts so far that repeated a request whose earlier attempt failed
    /// (throttled, a 5xx, a broken connection, a timeout).
    pub fn retries(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// The retries since the last call, for a checkpoint that adds them up.
    pub fn take_retries(&self) -> u64 {
        self.retried.swap(0, Ordering::Relaxed)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "s3_fanout::RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_else(|| "Unknown".to_owned());
        self.record(&operation);
        // The orchestrator numbers the attempts of one request from 1.
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            self.retried.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // S3 throttles with 503 SlowDown; some S3-compatible servers use 429.
        if matches!(context.response().status().as_u16(), 503 | 429) {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_per_operation_across_clones() {
        let counter = RequestCounter::new();
        let clone = counter.clone();
        counter.record("ListObjectsV2");
        clone.record("ListObjectsV2");
        clone.record("CopyObject");
        let snap = counter.snapshot();
        assert_eq!(snap["ListObjectsV2"], 2);
        assert_eq!(snap["CopyObject"], 1);
        assert_eq!(counter.total(), 3);
    }
}
