//! What the plan adds up while it diffs: every planned action's requests,
//! its estimated time, and the copier batches the serverless listers would
//! cut from it (the real [`BatchBuilder`], so message counts are exact for
//! one shard's key order); and for the serverless estimate, how the keys
//! spread over the key space and the writes over top-level prefixes.

use std::collections::HashMap;

use crate::engine::diff::Action;
use crate::model::location::KeyRange;
use crate::model::options::{SyncOptions, Transfer};
use crate::model::s3_shape::{EtagShape, default_part_size, etag_shape, uniform_layout};
use crate::serverless::batch::{BatchBuilder, BatchLimits};
use crate::serverless::contract::{CopyBatch, CopyTask};

use super::requests::{self, Requests};
use crate::model::prices::Assumptions;

/// One copier batch, as the serverless runtime would send it.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchCost {
    pub tasks: u64,
    pub body_bytes: u64,
    /// Sum of its tasks' estimated seconds.
    pub task_secs: f64,
    /// Its slowest task's seconds.
    pub longest_task_secs: f64,
    /// Its delete tasks, which the copier sends in one DeleteObjects.
    pub deletes: u64,
}

impl BatchCost {
    /// A batch of `tasks` CopyObjects of small objects, each taking the
    /// assumptions' `copy_request_ms` (the models' first copies).
    pub fn small_copies(tasks: u64, a: &Assumptions) -> Self {
        BatchCost {
            tasks,
            body_bytes: 240 * tasks,
            task_secs: tasks as f64 * a.copy_request_ms / 1000.0,
            longest_task_secs: a.copy_request_ms / 1000.0,
            deletes: 0,
        }
    }
}

pub struct Tally {
    options: SyncOptions,
    assumptions: Assumptions,
    pub requests: Requests,
    /// Estimated seconds of every copy and delete, one after another.
    pub task_secs: f64,
    pub tasks: u64,
    /// Bytes of the objects absent at the destination.
    pub copy_bytes: u64,
    /// Deletes, which go out in batches ([`requests::for_deletes`]).
    pub deletes: u64,
    /// Updates of a copy of the same size (its source is newer, ETags
    /// differ): pairs `check` proves by checksums, as it has no times.
    pub same_size_updates: u64,
    builder: BatchBuilder,
    open: BatchCost,
    pub batches: Vec<BatchCost>,
    /// Every key met, sampled: how many fall in each serverless shard.
    pub keys: KeySample,
    /// Writes (copies, updates, deletes) under each top-level prefix, the
    /// unit S3 starts partitioning at; at most [`MAX_PREFIXES`] of them.
    pub writes_by_prefix: HashMap<String, u64>,
}

/// Top-level prefixes whose writes the plan counts; past them a bucket's
/// writes are spread widely enough for the busiest not to matter.
pub const MAX_PREFIXES: usize = 100_000;

/// The top-level prefix of a key: up to and with its first `/`, or none
/// for a key without one (S3 partitions by key prefix; a flat key space
/// starts as one partition).
fn top_level(key: &str) -> &str {
    match key.find('/') {
        Some(slash) => &key[..=slash],
        None => "",
    }
}

/// An evenly thinned sample of keys, of at most twice [`KeySample::LIMIT`]
/// whatever the number of keys: every `every`-th key met, `every` doubling
/// (and the sample halving) whenever it fills.
#[derive(Debug, Clone)]
pub struct KeySample {
    every: u64,
    seen: u64,
    keys: Vec<String>,
}

impl Default for KeySample {
    fn default() -> Self {
        KeySample {
            every: 1,
            seen: 0,
            keys: Vec::new(),
        }
    }
}

impl KeySample {
    pub const LIMIT: usize = 65_536;

    pub fn push(&mut self, key: &str) {
        if self.seen.is_multiple_of(self.every) {
            self.keys.push(key.to_owned());
            if self.keys.len() >= 2 * Self::LIMIT {
                let mut index = 0;
                self.keys.retain(|_| {
                    index += 1;
                    index % 2 == 1
                });
                self.every *= 2;
            }
        }
        self.seen += 1;
    }

    /// Keys met in all.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// About how many of the keys met fall in each of `ranges`: exact
    /// below [`KeySample::LIMIT`] keys, within a few sampled keys' worth
    /// above.
    pub fn per_range(&self, ranges: &[KeyRange]) -> Vec<u64> {
        let sampled: Vec<u64> = ranges
            .iter()
            .map(|r| self.keys.iter().filter(|k| r.contains(k)).count() as u64)
            .collect();
        let total: u64 = sampled.iter().sum();
        // Scaled so they add up to the keys met, not the sample's estimate.
        sampled
            .iter()
            .map(|n| (n * self.seen).checked_div(total).unwrap_or(0))
            .collect()
    }
}

impl Tally {
    pub fn new(options: &SyncOptions, assumptions: &Assumptions) -> Self {
        Tally {
            options: options.clone(),
            assumptions: assumptions.clone(),
            requests: Requests::new(),
            task_secs: 0.0,
            tasks: 0,
            copy_bytes: 0,
            deletes: 0,
            same_size_updates: 0,
            builder: BatchBuilder::new("plan", "00000-00000", 0, BatchLimits::default()),
            open: BatchCost::default(),
            batches: Vec::new(),
            keys: KeySample::default(),
            writes_by_prefix: HashMap::new(),
        }
    }

    pub fn take(&mut self, action: &Action) {
        let key = action.key();
        self.keys.push(key);
        if matches!(action, Action::Skip { .. }) {
            return;
        }
        let prefix = top_level(key);
        if let Some(writes) = self.writes_by_prefix.get_mut(prefix) {
            *writes += 1;
        } else if self.writes_by_prefix.len() < MAX_PREFIXES {
            self.writes_by_prefix.insert(prefix.to_owned(), 1);
        }
        requests::for_action(&self.options, action, &mut self.requests);
        match action {
            Action::Copy { source } => self.copy_bytes += source.size,
            Action::Update {
                source,
                destination,
            } if source.size == destination.size => self.same_size_updates += 1,
            _ => {}
        }
        let secs = self.task_secs(action);
        self.task_secs += secs;
        self.tasks += 1;
        if let Some(task) = CopyTask::from_action(action.clone())
            && let Some(full) = self.builder.push(task)
        {
            self.close(&full);
        }
        if matches!(action, Action::Delete { .. }) {
            self.deletes += 1;
            self.open.deletes += 1;
        }
        self.open.tasks += 1;
        self.open.task_secs += secs;
        self.open.longest_task_secs = self.open.longest_task_secs.max(secs);
    }

    fn close(&mut self, batch: &CopyBatch) {
        let mut cost = std::mem::take(&mut self.open);
        cost.body_bytes = batch.body().len() as u64;
        self.batches.push(cost);
    }

    /// Close the last batch, and count the deletes' batched requests.
    pub fn finish(&mut self) {
        if let Some(last) = self.builder.flush() {
            self.close(&last);
        }
        requests::for_deletes(&self.options, self.deletes, &mut self.requests);
    }

    /// Writes under the busiest top-level prefix.
    pub fn busiest_prefix_writes(&self) -> u64 {
        self.writes_by_prefix.values().copied().max().unwrap_or(0)
    }

    /// How long one action takes: a request's latency, plus its bytes at
    /// one copy's speed, spread over its parts in flight.
    fn task_secs(&self, action: &Action) -> f64 {
        let a = &self.assumptions;
        let request = a.copy_request_ms / 1000.0;
        let (Action::Copy { source }
        | Action::Update { source, .. }
        | Action::Compare { source, .. }) = action
        else {
            return request; // a delete
        };
        let copy = &self.options.copy;
        let parts = match etag_shape(&source.etag) {
            EtagShape::Multipart(n)
                if copy.mirror_parts || self.options.transfer != Transfer::ServerSide =>
            {
                u64::from(n)
            }
            _ if source.size > copy.multipart_threshold => {
                uniform_layout(source.size, default_part_size(source.size, copy.part_size)).len()
                    as u64
            }
            _ => 1,
        };
        let in_flight = parts.min(copy.part_concurrency as u64).max(1) as f64;
        // A multipart copy also starts, lists and completes its upload.
        let overhead = if parts > 1 { 3.0 * request } else { request };
        let mib = source.size as f64 / (1024.0 * 1024.0);
        overhead + mib / (a.server_side_copy_mib_per_second * in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start_at: &str, end_before: &str) -> KeyRange {
        KeyRange {
            start_at: (!start_at.is_empty()).then(|| start_at.to_owned()),
            end_before: (!end_before.is_empty()).then(|| end_before.to_owned()),
            ..KeyRange::default()
        }
    }

    #[test]
    fn a_sample_of_a_million_keys_counts_each_range_within_a_percent() {
        // GIVEN a million keys, 90% of them under one prefix, met out of order
        let mut sample = KeySample::default();
        for i in 0..1_000_000u64 {
            let i = (i * 7_919) % 1_000_000;
            let key = if i < 900_000 {
                format!("hot/{i:07}")
            } else {
                format!("cold{}/{i:07}", i % 10)
            };
            sample.push(&key);
        }
        // THEN it holds at most twice its limit, and counts the ranges
        assert!(sample.keys.len() < 2 * KeySample::LIMIT);
        let counts = sample.per_range(&[
            range("", "hot/"),
            range("hot/", "hot/0450000"),
            range("hot/0450000", ""),
        ]);
        assert_eq!(counts.iter().sum::<u64>(), 1_000_000);
        for (got, want) in counts.iter().zip([100_000u64, 450_000, 450_000]) {
            assert!(got.abs_diff(want) < want / 100, "{counts:?}");
        }
    }

    #[test]
    fn a_flat_key_space_is_one_top_level_prefix() {
        assert_eq!(top_level("obj-000123"), "");
        assert_eq!(top_level("2026/12/04/a"), "2026/");
    }
}
