//! `--max-requests-per-second`: a cap on the requests one client sends, for
//! buckets shared with production traffic.
//!
//! The cap sits in the HTTP layer, wrapped around the SDK's own client, so
//! every request counts, whatever operation sent it and whether it is a
//! first attempt or a retry. Requests are spaced evenly rather than let
//! through in bursts: S3 throttles per second per prefix, and a burst of a
//! second's allowance at once is what trips it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::time::Instant;

/// Hands out send times at most `rate` per second, evenly spaced.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        RateLimiter {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(None),
        }
    }

    /// Wait for this request's turn.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().expect("poisoned");
            let now = Instant::now();
            // An idle period earns no burst: the slot is never in the past.
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The SDK's HTTP client, with every request waiting for the limiter.
#[derive(Debug, Clone)]
pub struct RateLimitedClient {
    inner: SharedHttpClient,
    limiter: Arc<RateLimiter>,
}

impl RateLimitedClient {
    pub fn new(inner: SharedHttpClient, per_second: u32) -> Self {
        RateLimitedClient {
            inner,
            limiter: Arc::new(RateLimiter::new(per_second)),
        }
    }
}

impl HttpClient for RateLimitedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RateLimitedConnector {
            inner: self.inner.http_connector(settings, components),
            limiter: self.limiter.clone(),
        })
    }
}

#[derive(Debug)]
struct RateLimitedConnector {
    inner: SharedHttpConnector,
    limiter: Arc<RateLimiter>,
}

impl HttpConnector for RateLimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (inner, limiter) = (self.inner.clone(), self.limiter.clone());
        HttpConnectorFuture::new(async move {
            limiter.acquire().await;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_evenly_at_the_rate() {
        let limiter = Arc::new(RateLimiter::new(5));
        let start = Instant::now();
        // Ten callers at once: the tenth goes 9 intervals (1.8 s) later.
        let waits: Vec<Duration> = futures::future::join_all((0..10).map(|_| {
            let limiter = limiter.clone();
            async move {
                limiter.acquire().await;
                start.elapsed()
            }
        }))
        .await;
        let mut waits = waits;
        waits.sort();
        assert_eq!(waits[0], Duration::ZERO);
        assert_eq!(waits[9], Duration::from_millis(1800));
        for pair in waits.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(200));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_period_earns_no_burst() {
        let limiter = RateLimiter::new(10);
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
}
