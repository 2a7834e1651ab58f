//! What the plan adds up while it diffs: every planned action's requests,
//! its estimated time, and the copier batches the serverless listers would
//! cut from it (the real [`BatchBuilder`], so message counts are exact for
//! one shard's key order).

use crate::engine::diff::Action;
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
        }
    }

    pub fn take(&mut self, action: &Action) {
        if matches!(action, Action::Skip { .. }) {
            return;
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
