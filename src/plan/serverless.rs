//! What the same sync would cost on the serverless runtime: SQS messages,
//! Lambda invocations and GB-seconds, Step Functions state transitions,
//! and the wall time at a given copier concurrency.
//!
//! Counts follow `statemachine/sync.asl.json` and the functions' code:
//! - the planner once; listers off the range queue, `shard_concurrency`
//!   at once, starting from the shards (each holding the keys the plan's
//!   own listing put between the planner's real cuts), again whenever an
//!   invocation reaches `lister_max_keys` keys or its deadline, and a new
//!   range whenever one splits its rest off for a lister with nothing to
//!   do (`listing_pass`); for WRITE and, where a batch was sent, for
//!   VALIDATE;
//! - copies no faster than S3 takes writes under the busiest top-level
//!   prefix (3,500 a second while it is one partition);
//! - the run counters in DynamoDB: per batch a marker and a count when
//!   sent and when done, two timeline updates; two Queries per poll;
//! - a copier per `batch_size` messages of at most 100 tasks each
//!   (the real [`crate::serverless::batch::BatchBuilder`] cuts them);
//! - the reporter once per progress poll, waiting as
//!   [`crate::model::polling`] says (the reporter's own rule), and once
//!   for the report.

use std::collections::BTreeMap;

use serde::Serialize;

use super::requests::{Requests, add};
use super::tally::BatchCost;
use crate::base::error::SyncError;
use crate::engine::pieces::PAGES_BEFORE_CUT;
use crate::model::deadlines::{pull_margin, stop_margin};
use crate::model::polling::{expected_lateness_secs, polls_for};
use crate::model::prices::{Assumptions, PriceTable};
use std::time::Duration;

/// The stack's settings the estimate depends on (the template's defaults).
#[derive(Debug, Clone, Serialize)]
pub struct StackShape {
    pub copier_concurrency: u64,
    pub copier_batch_size: u64,
    pub copier_task_concurrency: u64,
    pub shard_concurrency: u64,
    /// Range tasks a lister invocation lists at once (`ListerStreams`).
    pub lister_streams: u64,
    pub lister_max_keys: u64,
    pub architecture: String,
    pub validate: bool,
    /// The stack publishes each run's end to SNS (RunNotifications).
    pub notifications: bool,
}

impl StackShape {
    /// The template's parameters for the first copy of a large bucket
    /// (README, "The first copy of a large bucket"): `ListingConcurrency`
    /// 300, `ListerStreams` 10, `CopierMaxConcurrency` 300,
    /// `CopierBatchSize` 10 and `CopierTaskConcurrency` 32.
    /// - A copier copies 10 messages at once, 32 tasks of each at a time:
    ///   320 requests in flight, well within a function's 1,024 file
    ///   descriptors, and about 3,300 small objects a second. The work
    ///   queue's event source, adding 300 copiers a minute, so reaches S3's
    ///   pace over 100 prefixes (350,000 writes a second) in 20 s.
    /// - VALIDATE lists both sides again after the copies, its listers
    ///   ramping from 5 as well (the range queue was empty while the copies
    ///   ran, and Lambda scales an idle queue's mapping back to 5). The
    ///   ramp, not the cap, sets its pace, so each lister lists as many
    ///   ranges as its event source's batch allows (10), and 300 of them
    ///   are there when the ramp reaches them: 100M in under a minute.
    /// - 600 functions at once stay within an account's default 1,000.
    pub fn for_a_first_copy(self) -> Self {
        StackShape {
            shard_concurrency: 300,
            lister_streams: 10,
            copier_concurrency: 300,
            copier_batch_size: 10,
            copier_task_concurrency: 32,
            ..self
        }
    }
}

/// What the plan measured and decided, the model's input.
pub struct Inputs<'a> {
    pub shards: u64,
    /// Keys in each shard, from the plan's listing spread over the
    /// planner's cuts; empty: spread evenly.
    pub shard_keys: &'a [u64],
    /// Writes under the busiest top-level prefix.
    pub busiest_prefix_writes: u64,
    pub listed_source: u64,
    pub listed_destination: u64,
    /// The destination after the run (for VALIDATE's listing).
    pub destination_after: u64,
    /// Requests of the copies and deletes themselves, as the local
    /// runtime sends them (deletes a thousand to a DeleteObjects).
    pub transfer_requests: &'a Requests,
    pub batches: &'a [BatchCost],
    /// Requests the planner made to cut the shards (measured).
    pub planner_requests: &'a Requests,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerlessEstimate {
    pub stack: StackShape,
    pub shards: u64,
    pub s3_requests: Requests,
    pub sqs_messages: u64,
    pub sqs_requests: u64,
    pub lambda_invocations: BTreeMap<String, u64>,
    pub lambda_gb_seconds: BTreeMap<String, f64>,
    pub state_transitions: u64,
    /// Events in the execution's history (Standard workflows stop at 25,000).
    pub history_events: u64,
    /// Progress polls of the state machine, both passes.
    pub progress_polls: u64,
    /// The run counters' write and read units (on-demand).
    pub dynamodb_write_units: u64,
    pub dynamodb_read_units: u64,
    /// Keys of the largest shard, and how long one pass lists.
    pub largest_shard_keys: u64,
    pub listing_secs: f64,
    /// Ranges the write phase listed: the shards, and those split off them.
    pub ranges: u64,
    /// Range tasks of both passes (a task each time a stream takes a range).
    pub lister_tasks: u64,
    /// The shortest time S3 takes the copies in, at its per-prefix rate.
    pub partition_bound_secs: f64,
    /// From the start until the state machine sees the write phase done:
    /// every batch copied (VALIDATE's listing follows).
    pub write_secs: f64,
    pub cost_usd: BTreeMap<String, f64>,
    pub total_usd: f64,
    pub wall_secs: f64,
}

/// Memory that buys one vCPU of a Lambda function ("at 1,769 MB, a
/// function has the equivalent of one vCPU", Lambda developer guide,
/// "Configuring memory").
const LAMBDA_MB_PER_VCPU: f64 = 1769.0;

/// Keys a lister handles between checkpoints (the stack's default
/// `S3_FANOUT_CHECKPOINT_KEYS`).
const CHECKPOINT_KEYS: u64 = 10_000;

/// One listing pass: its lister invocations, their billed time summed,
/// the pass's wall time, and the ranges it listed (shards and splits).
#[derive(Debug, Clone, Default)]
struct Pass {
    invocations: u64,
    /// Range tasks listed (each its lease, checkpoints and hand-on).
    tasks: u64,
    lister_secs: f64,
    wall_secs: f64,
    ranges: u64,
    /// When each range (shard or split) was listed to its end, and the
    /// source keys it covered.
    ends: Vec<(f64, u64)>,
}

/// A stream at work in [`listing_pass`]: the range task it holds, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Stream {
    at: f64,
    /// Source keys of its range still to list, and listed so far (by
    /// this task and the range's earlier ones).
    left: u64,
    listed: u64,
    /// Keys since its range was last cut or looked at for a cut.
    since_cut: u64,
    /// Keys of this task, and when it stops listing (its deadline less
    /// [`stop_margin`] of the time it had when it began).
    task_keys: u64,
    stop_at: f64,
}

/// A lister invocation in [`listing_pass`]: its streams, and when it
/// began; `None` while it is not running.
#[derive(Debug, Clone, Default)]
struct Invocation {
    began: Option<f64>,
    streams: Vec<Option<Stream>>,
}

/// A pass listing `listed` keys (both sides) starting from shards of
/// `shard_keys` source keys, as the range queue runs it:
/// - `concurrency` invocations at once (the mapping's MaximumConcurrency),
///   each given up to `streams` tasks when it starts (its BatchSize);
/// - a free stream of a running invocation takes the next waiting task
///   until [`pull_margin`] before the deadline (`serverless::streams`);
///   an invocation ends when none of its streams lists and none can take
///   a task, and is billed from start to end, idle streams included;
/// - a task lists until `max_keys` keys or [`stop_margin`] before the
///   deadline, then hands its range's rest back to the queue;
/// - every [`CHECKPOINT_KEYS`] keys (the lister's [`PAGES_BEFORE_CUT`]
///   pages), when no task waits, a range with at least twice that left
///   splits its rest in two, the second half a new task
///   (`engine::pieces::bisect`, assuming keys evenly spread in the range).
///
/// The event source ramps up as it does for the copiers ([`CopyPhase`]).
/// A stream lists both sides at once, each at `list_keys_per_second`, no
/// faster than the invocation's share of a vCPU (memory / 1,769 MB) lets
/// all its streams parse. A retried invocation, which may not split, is
/// not modelled.
fn listing_pass(
    shard_keys: &[u64],
    (source, destination): (u64, u64),
    (max_keys, concurrency, streams): (u64, u64, u64),
    a: &Assumptions,
) -> Pass {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};
    let streams = streams.max(1);
    let speed = stream_speed((source, destination), streams, a);
    let start = a.function_start_ms / 1000.0;
    let timeout = a.lister_timeout_secs;
    let secs = |d: Duration| d.as_secs_f64();
    let pull_until = timeout - secs(pull_margin(Duration::from_secs_f64(timeout)));
    let max_keys = max_keys.max(1);
    let cut_keys = PAGES_BEFORE_CUT * 1_000;
    // Waiting tasks: (keys left, keys their range listed before).
    let mut queue: VecDeque<(u64, u64)> = shard_keys
        .iter()
        .filter(|&&k| k > 0)
        .map(|&k| (k, 0))
        .collect();
    let mut pass = Pass {
        ranges: queue.len() as u64,
        ..Pass::default()
    };
    let mut invocations = vec![
        Invocation {
            began: None,
            streams: vec![None; streams as usize],
        };
        concurrency.max(1) as usize
    ];
    // (time of a stream's next event, in µs, invocation, stream). Time
    // advances at least a µs an event, so a fast stream never stalls in
    // rounding.
    let mut events: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
    let next_event = |s: &Stream| -> f64 {
        let to_stop = ((s.stop_at - s.at) * speed).max(0.0) as u64;
        let keys = s
            .left
            .min(cut_keys - s.since_cut.min(cut_keys))
            .min(max_keys - s.task_keys.min(max_keys))
            .min(to_stop)
            .max(1);
        s.at + (keys as f64 / speed).max(2e-6)
    };
    let us = |t: f64| (t * 1e6).round() as u64;
    let task = |(left, listed): (u64, u64), began: f64, now: f64| -> Stream {
        let remaining = (began + timeout - now).max(0.0);
        Stream {
            at: now,
            left,
            listed,
            since_cut: 0,
            task_keys: 0,
            stop_at: began + timeout - secs(stop_margin(Duration::from_secs_f64(remaining))),
        }
    };
    // The range queue's event source starts `esm_start_invocations` and
    // adds `esm_added_invocations_per_minute` while tasks wait: invocation
    // `i` may start no sooner than this. Each pass ramps from the start:
    // the event source scales back while its queue is empty between passes.
    let added_per_sec = (a.esm_added_invocations_per_minute / 60.0).max(1e-9);
    let ramp_at = |i: usize| (i as f64 + 1.0 - a.esm_start_invocations).max(0.0) / added_per_sec;
    const WAKE: usize = usize::MAX;
    for i in 0..invocations.len() {
        if ramp_at(i) > 0.0 {
            events.push(Reverse((us(ramp_at(i)), i, WAKE)));
        }
    }
    let (mut now, mut last) = (0.0f64, 0.0f64);
    loop {
        for (i, invocation) in invocations.iter_mut().enumerate() {
            // A running invocation's free streams pull what waits, until
            // its time to pull is over; with none listing and nothing to
            // take, it ends.
            if let Some(began) = invocation.began {
                if now < began + pull_until {
                    for (j, slot) in invocation.streams.iter_mut().enumerate() {
                        if slot.is_none()
                            && let Some(left) = queue.pop_front()
                        {
                            let stream = task(left, began, now);
                            pass.tasks += 1;
                            events.push(Reverse((us(next_event(&stream)), i, j)));
                            *slot = Some(stream);
                        }
                    }
                }
                if invocation.streams.iter().all(Option::is_none) {
                    pass.lister_secs += now - began;
                    invocation.began = None;
                }
            }
            // The event source starts an idle one with a batch.
            if invocation.began.is_none() && !queue.is_empty() && now >= ramp_at(i) - 1e-6 {
                let began = now + start;
                pass.invocations += 1;
                pass.lister_secs += start;
                invocation.began = Some(began);
                for (j, slot) in invocation.streams.iter_mut().enumerate() {
                    if let Some(left) = queue.pop_front() {
                        let stream = task(left, began, began);
                        pass.tasks += 1;
                        events.push(Reverse((us(next_event(&stream)), i, j)));
                        *slot = Some(stream);
                    }
                }
            }
        }
        let Some(Reverse((when, i, j))) = events.pop() else {
            break;
        };
        now = when as f64 / 1e6;
        if j == WAKE {
            continue; // the event source may start invocation i now
        }
        last = now;
        let slot = &mut invocations[i].streams[j];
        let mut stream = slot.expect("an event is a busy stream's");
        let keys = (((now - stream.at) * speed).round() as u64).min(stream.left);
        stream.at = now;
        stream.left -= keys;
        stream.listed += keys;
        stream.since_cut += keys;
        stream.task_keys += keys;
        if stream.left == 0 {
            pass.ends.push((now, stream.listed));
            *slot = None;
            continue;
        }
        if stream.task_keys >= max_keys || now >= stream.stop_at - 1e-3 {
            queue.push_back((stream.left, stream.listed)); // the range's next task
            *slot = None;
            continue;
        }
        if stream.since_cut >= cut_keys {
            if queue.is_empty() && stream.left >= 2 * cut_keys {
                let half = stream.left / 2;
                queue.push_back((stream.left - half, 0));
                stream.left = half;
                pass.ranges += 1;
            }
            stream.since_cut = 0;
        }
        events.push(Reverse((us(next_event(&stream)), i, j)));
        *slot = Some(stream);
    }
    pass.wall_secs = last;
    pass
}

/// Source keys a stream goes through a second: the longer side sets the
/// pace; and the CPU an invocation's `streams` share.
fn stream_speed((source, destination): (u64, u64), streams: u64, a: &Assumptions) -> f64 {
    let longer = source.max(destination).max(1) as f64;
    let by_requests = a.list_keys_per_second * source.max(1) as f64 / longer;
    let cpu_per_source_key =
        a.lister_cpu_us_per_key / 1e6 * (source + destination) as f64 / source.max(1) as f64;
    let vcpus = a.lister_memory_mb / LAMBDA_MB_PER_VCPU;
    if cpu_per_source_key > 0.0 {
        by_requests.min(vcpus / cpu_per_source_key / streams.max(1) as f64)
    } else {
        by_requests
    }
}

/// ListObjectsV2 pages for one pass: each shard lists both sides; a shard's
/// last page is partial.
fn list_pages(shards: u64, source: u64, destination: u64) -> u64 {
    source.div_ceil(1000) + destination.div_ceil(1000) + shards.max(1)
}

/// What the run the plan measured would take and cost on `stack`.
pub fn estimate(
    stack: StackShape,
    inputs: Inputs<'_>,
    prices: &PriceTable,
) -> Result<ServerlessEstimate, SyncError> {
    let shards = inputs.shards.max(1);
    let batches = inputs.batches.len() as u64;
    let a = &prices.assumptions;
    let shard_keys = shard_keys(&inputs, shards);
    let limits = (
        stack.lister_max_keys,
        stack.shard_concurrency,
        stack.lister_streams,
    );
    let write = listing_pass(
        &shard_keys,
        (inputs.listed_source, inputs.listed_destination),
        limits,
        a,
    );
    // A shard whose write phase sent no batch is not listed again: with
    // none sent anywhere, VALIDATE is a task per range that reads what the
    // write phase left and lists nothing. Such tasks end at once, so an
    // invocation's free streams pull the next until none waits: the
    // mapping's concurrency in invocations at most.
    let validating = stack.validate && batches > 0;
    let validate = match (stack.validate, validating) {
        (true, true) => listing_pass(
            &shard_keys,
            (inputs.listed_source, inputs.destination_after),
            limits,
            a,
        ),
        (true, false) => Pass {
            invocations: write
                .ranges
                .div_ceil(stack.lister_streams.max(1))
                .min(stack.shard_concurrency.max(1)),
            tasks: write.ranges,
            lister_secs: write.ranges as f64 * a.function_start_ms / 1000.0,
            wall_secs: 0.0,
            ranges: write.ranges,
            ends: Vec::new(),
        },
        (false, _) => Pass::default(),
    };
    let (listing_secs, ranges) = (write.wall_secs, write.ranges);
    let run = Run {
        stack: &stack,
        inputs: &inputs,
        a,
        shards,
        batches,
        copier_invocations: batches.div_ceil(stack.copier_batch_size.max(1)),
        listers: write.invocations,
        validators: validate.invocations,
        tasks: write.tasks + validate.tasks,
        write,
        validate,
        validating,
    };
    let lister_tasks = run.tasks;
    let timing = run.timing();
    let s3 = run.s3_requests(timing.polls);
    let sqs_requests = run.sqs_requests(prices, &timing);
    let invocations = run.invocations(timing.polls);
    let gb_seconds = run.gb_seconds(&timing);
    let transitions = run.state_transitions(timing.polls);
    let history_events = run.history_events(timing.polls);
    let (write_units, read_units) = run.dynamodb_units(&timing);

    let total_invocations: u64 = invocations.values().sum();
    let gb_price = prices.lambda_gb_second(&stack.architecture)?;
    let mut cost = BTreeMap::new();
    cost.insert("s3_requests".to_owned(), prices.s3_requests(&s3)?);
    cost.insert(
        "sqs".to_owned(),
        sqs_requests as f64 / 1e6 * prices.sqs.per_million_requests,
    );
    cost.insert(
        "lambda".to_owned(),
        total_invocations as f64 / 1e6 * prices.lambda.per_million_requests
            + gb_seconds.values().sum::<f64>() * gb_price,
    );
    cost.insert(
        "step_functions".to_owned(),
        transitions as f64 / 1000.0 * prices.step_functions.per_1000_state_transitions,
    );
    cost.insert(
        "dynamodb".to_owned(),
        write_units as f64 / 1e6 * prices.dynamodb.per_million_write_request_units
            + read_units as f64 / 1e6 * prices.dynamodb.per_million_read_request_units,
    );
    let total_usd = cost.values().sum();
    Ok(ServerlessEstimate {
        stack,
        shards,
        s3_requests: s3,
        sqs_messages: batches,
        sqs_requests,
        lambda_invocations: invocations,
        lambda_gb_seconds: gb_seconds,
        state_transitions: transitions,
        history_events,
        progress_polls: timing.polls,
        dynamodb_write_units: write_units,
        dynamodb_read_units: read_units,
        largest_shard_keys: shard_keys.iter().copied().max().unwrap_or(0),
        listing_secs,
        ranges,
        lister_tasks,
        partition_bound_secs: timing.partition_bound_secs,
        write_secs: timing.write_secs,
        cost_usd: cost,
        total_usd,
        wall_secs: timing.wall_secs,
    })
}

/// Keys per shard: the plan's, or the listing spread evenly when it has
/// none for these shards.
fn shard_keys(inputs: &Inputs<'_>, shards: u64) -> Vec<u64> {
    if inputs.shard_keys.len() as u64 == shards && inputs.shard_keys.iter().any(|k| *k > 0) {
        return inputs.shard_keys.to_vec();
    }
    let keys = inputs.listed_source.max(inputs.listed_destination);
    (0..shards)
        .map(|i| keys / shards + u64::from(i < keys % shards))
        .collect()
}

/// What every step of the estimate shares: the stack, the plan's figures
/// and the invocations they imply.
struct Run<'a> {
    stack: &'a StackShape,
    inputs: &'a Inputs<'a>,
    a: &'a Assumptions,
    shards: u64,
    batches: u64,
    copier_invocations: u64,
    /// Lister invocations of the WRITE pass, and of the VALIDATE pass (0
    /// without it).
    listers: u64,
    validators: u64,
    /// Range tasks of both passes: a stream of an invocation each.
    tasks: u64,
    write: Pass,
    validate: Pass,
    /// VALIDATE lists (some shard sent a batch).
    validating: bool,
}

/// The copies of a run, as the work queue's event source runs them.
struct CopyPhase {
    tasks: f64,
    /// Tasks a second one busy copier goes through.
    per_copier: f64,
    /// Copiers at most (CopierMaxConcurrency, or fewer invocations).
    copiers: f64,
    /// Tasks a second S3 takes: the busiest top-level prefix's writes at
    /// its partition's rate set the pace of all of them.
    s3_rate: f64,
    /// The listers send the batches evenly over their pass.
    listing_secs: f64,
}

impl CopyPhase {
    /// Tasks done by the end of each [`COPY_STEP`], until the last copier
    /// takes its last batch. The event source starts
    /// `esm_start_invocations` copiers and adds
    /// `esm_added_invocations_per_minute` while batches wait, up to
    /// `copiers`; they go no faster than S3 takes writes, and take only what
    /// the listers have sent.
    fn progress(&self, a: &Assumptions) -> Vec<f64> {
        let added_per_sec = a.esm_added_invocations_per_minute / 60.0;
        let (mut at, mut done) = (0.0f64, 0.0f64);
        let mut progress = Vec::new();
        while done < self.tasks {
            let copiers = (a.esm_start_invocations + added_per_sec * at)
                .min(self.copiers)
                .max(1.0);
            let rate = (copiers * self.per_copier).min(self.s3_rate);
            at += COPY_STEP;
            done = (done + rate * COPY_STEP).min(self.sent_by(at));
            progress.push(done);
        }
        progress
    }

    /// Tasks the listers have sent `at` seconds into their pass.
    fn sent_by(&self, at: f64) -> f64 {
        if self.listing_secs > 0.0 {
            self.tasks * (at / self.listing_secs).min(1.0)
        } else {
            self.tasks
        }
    }
}

/// The step of [`CopyPhase`]'s simulation, in seconds.
const COPY_STEP: f64 = 0.1;

/// How long the run takes.
struct Timing {
    /// Copier invocations' time, summed.
    copier_secs: f64,
    /// Reporter progress polls.
    polls: u64,
    wall_secs: f64,
    /// Until the state machine sees the write phase done.
    write_secs: f64,
    /// The copies at S3's rate for the busiest top-level prefix.
    partition_bound_secs: f64,
}

impl Run<'_> {
    fn timing(&self) -> Timing {
        let (stack, inputs, a) = (self.stack, self.inputs, self.a);
        // Copier time: an invocation copies its messages at once, each
        // message's tasks `copier_task_concurrency` at a time
        // (`serverless::copier`), and ends with its slowest message.
        let start = a.function_start_ms / 1000.0;
        let per_message = stack.copier_task_concurrency.max(1) as f64;
        let invocation_secs: Vec<f64> = inputs
            .batches
            .chunks(stack.copier_batch_size.max(1) as usize)
            .map(|messages| {
                messages
                    .iter()
                    .map(|b| (b.task_secs / per_message).max(b.longest_task_secs))
                    .fold(0.0, f64::max)
                    + start
            })
            .collect();
        let copier_secs: f64 = invocation_secs.iter().sum();
        let partition_bound_secs =
            inputs.busiest_prefix_writes as f64 / a.s3_writes_per_second_per_prefix.max(1.0);
        let tasks: u64 = inputs.batches.iter().map(|b| b.tasks).sum();
        let (copy_wall, validate_tail) = if tasks == 0 {
            (0.0, None)
        } else {
            let copies = CopyPhase {
                tasks: tasks as f64,
                per_copier: tasks as f64 / copier_secs,
                copiers: stack.copier_concurrency.min(self.copier_invocations).max(1) as f64,
                s3_rate: if partition_bound_secs > 0.0 {
                    tasks as f64 / partition_bound_secs
                } else {
                    f64::INFINITY
                },
                listing_secs: self.write.wall_secs,
            };
            let progress = copies.progress(a);
            // A batch is done an invocation's time after it is taken.
            let lag = copier_secs / invocation_secs.len() as f64;
            let tail = self
                .validating
                .then(|| self.validate_tail(&copies, &progress, lag));
            (progress.len() as f64 * COPY_STEP + lag, tail)
        };
        let write_wall = self.write.wall_secs.max(copy_wall);
        // Listers take range tasks off the range queue while the state
        // machine polls progress: the write phase's polls cover its listing
        // and its copies, and VALIDATE starts polling again from 2 s.
        let (write_polls, write_last_wait) = polls_for(write_wall);
        // How late each pass is seen ended: its last wait, cut to the end
        // its pace predicts.
        let write_late = expected_lateness_secs(write_last_wait);
        // VALIDATE, from when the state machine starts it: the whole pass,
        // or, where it listed ranges while others copied, what is left
        // after the last copy less the time the state machine took to see
        // the copies done.
        let validate_list_secs = match validate_tail {
            Some(tail) => (copy_wall + tail - write_wall - write_late).max(0.0),
            None => self.validate.wall_secs,
        };
        let (validate_polls, validate_last_wait) = if self.stack.validate {
            polls_for(validate_list_secs)
        } else {
            (0, 0)
        };
        let validate_late = if self.stack.validate {
            expected_lateness_secs(validate_last_wait)
        } else {
            0.0
        };
        Timing {
            copier_secs,
            polls: write_polls + validate_polls,
            wall_secs: 2.0 + write_wall + write_late + validate_list_secs + validate_late + 2.0,
            write_secs: 2.0 + write_wall + write_late,
            partition_bound_secs,
        }
    }

    /// How long VALIDATE still lists after the last copy, since it lists
    /// each write-phase range again as soon as the range's copies are done
    /// (`serverless::ranges::validate_when_copied`).
    /// - SQS gives standard queues best-effort ordering ("messages are
    ///   generally delivered in the same order as they're sent", Amazon
    ///   SQS developer guide, "Amazon SQS standard queues"), so batches are
    ///   copied in the order sent: a range is copied once the copies reach
    ///   what had been sent when its listing ended (the listers' sends
    ///   spread evenly over their pass, as in [`CopyPhase`]).
    /// - Ranges copied wait, in that order, for a stream: the mapping's
    ///   MaximumConcurrency times `ListerStreams`, ramping as [`CopyPhase`]'s
    ///   from when the first range is copied. Each is listed by one stream,
    ///   without splits.
    /// - What is still unlisted when the last copy ends is listed as a
    ///   pass of its own, its event source ramping from 5 again.
    fn validate_tail(&self, copies: &CopyPhase, progress: &[f64], lag: f64) -> f64 {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let a = self.a;
        let streams = self.stack.lister_streams.max(1);
        let sides = (self.inputs.listed_source, self.inputs.destination_after);
        let speed = stream_speed(sides, streams, a);
        let start = a.function_start_ms / 1000.0;
        let copies_end = progress.len() as f64 * COPY_STEP + lag;
        // When each range is copied, in that order.
        let mut copied: Vec<(f64, u64)> = self
            .write
            .ends
            .iter()
            .map(|&(ended, keys)| {
                let sent = copies.sent_by(ended) * (1.0 - 1e-9);
                let step = progress.partition_point(|&done| done < sent);
                (((step + 1) as f64 * COPY_STEP + lag).min(copies_end), keys)
            })
            .collect();
        copied.sort_by(|x, y| x.0.total_cmp(&y.0));
        let first = copied.first().map_or(0.0, |c| c.0);
        let added_per_sec = (a.esm_added_invocations_per_minute / 60.0).max(1e-9);
        let cap = (self.stack.shard_concurrency * streams) as f64;
        let streams_at = |t: f64| {
            ((a.esm_start_invocations + added_per_sec * (t - first)) * streams as f64).min(cap)
        };
        // When the stream count first exceeds `busy`.
        let more_streams_at = |busy: usize| {
            first
                + ((busy as f64 + 1.0) / streams as f64 - a.esm_start_invocations).max(0.0)
                    / added_per_sec
        };
        let mut busy: BinaryHeap<Reverse<u64>> = BinaryHeap::new(); // ends, in µs
        let us = |t: f64| (t * 1e6).round() as u64;
        let mut left = Vec::new();
        for (ready, keys) in copied {
            let mut at = ready;
            loop {
                while busy.peek().is_some_and(|Reverse(end)| *end <= us(at)) {
                    busy.pop();
                }
                if (busy.len() as f64) < streams_at(at) {
                    break;
                }
                let freed = busy
                    .peek()
                    .map_or(f64::INFINITY, |Reverse(e)| *e as f64 / 1e6);
                let ramped = if (busy.len() as f64) < cap {
                    more_streams_at(busy.len())
                } else {
                    f64::INFINITY
                };
                at = freed.min(ramped).max(at + 1e-6);
                if at >= copies_end {
                    break;
                }
            }
            let listed = ((copies_end - at - start).max(0.0) * speed) as u64;
            if keys > listed {
                left.push(keys - listed);
            }
            if at < copies_end {
                busy.push(Reverse(us(at + start + keys as f64 / speed)));
            }
        }
        let limits = (
            self.stack.lister_max_keys,
            self.stack.shard_concurrency,
            streams,
        );
        listing_pass(&left, sides, limits, a).wall_secs
    }

    /// S3: the copies, the listings, and the run's own state in the report
    /// bucket (a record per batch, never read back; the checkpoints, read
    /// once by the report; the folders it lists).
    fn s3_requests(&self, polls: u64) -> Requests {
        let (inputs, shards, batches) = (self.inputs, self.shards, self.batches);
        let mut s3 = inputs.transfer_requests.clone();
        // A copier sends each message's deletes together (a message holds at
        // most 100 tasks): one DeleteObjects per batch with deletes, where the
        // local runtime sends one per thousand.
        s3.remove("DeleteObjects");
        let delete_batches = inputs.batches.iter().filter(|b| b.deletes > 0).count();
        add(&mut s3, "DeleteObjects", delete_batches as u64);
        for (op, n) in inputs.planner_requests {
            add(&mut s3, op, *n);
        }
        // Each range (shard or split) ends on a partial page a side.
        let _ = shards;
        let mut pages = list_pages(
            self.write.ranges,
            inputs.listed_source,
            inputs.listed_destination,
        );
        if self.validating {
            pages += list_pages(
                self.validate.ranges,
                inputs.listed_source,
                inputs.destination_after,
            );
        }
        let _ = polls; // progress reads the run counters, not the bucket
        add(&mut s3, "ListObjectsV2", pages);
        // A checkpoint every ten pages of a pass, one at each invocation's
        // end and its mark that it handed on; with VALIDATE, what each
        // range's write phase leaves it (a PUT, and VALIDATE's GET).
        let checkpoints = self.checkpoints() + self.tasks;
        let handed_over = if self.stack.validate {
            self.write.ranges
        } else {
            0
        };
        // The report lists sent/, rows/ and validate/, a page per 1,000.
        add(&mut s3, "ListObjectsV2", checkpoints.div_ceil(1000) + 3);
        add(
            &mut s3,
            "PutObject",
            batches + checkpoints + handed_over + 2,
        );
        add(&mut s3, "GetObject", checkpoints + handed_over + 1);
        s3
    }

    /// Checkpoints written: one every ten pages of a pass, and one at each
    /// task's end; a VALIDATE that lists nothing writes one a range.
    fn checkpoints(&self) -> u64 {
        let listed = self.inputs.listed_source * (1 + u64::from(self.validating));
        listed / CHECKPOINT_KEYS + self.tasks
    }

    /// The run counters' write and read units. Per batch: a marker and its
    /// share of a count when sent (a transaction: two units an item), a
    /// marker and a count when done, and the two seconds of the timeline
    /// it adds to (plain updates, a unit each); per lister save that sent
    /// batches, a count. Per progress poll two consistent Queries of 128
    /// small counter items (about 26 KB: 7 units each); the report one more
    /// and its timeline (100 bytes a second copied).
    ///
    /// Per range task its's lease and release (a unit
    /// each); per range a marker and a count when sent and when done (a
    /// transaction each: 4 units); per split its number (a unit).
    fn dynamodb_units(&self, timing: &Timing) -> (u64, u64) {
        let saves_with_batches = self.batches.min(self.checkpoints());
        let ranges = self.write.ranges + self.validate.ranges;
        // VALIDATE starts from the write phase's ranges, and may split them.
        let mut splits = self.write.ranges.saturating_sub(self.shards);
        if self.validating {
            splits += self.validate.ranges.saturating_sub(self.write.ranges);
        }
        // Where VALIDATE follows, each batch done also counts in its
        // range's copies (one more item of its transaction) and reads them
        // (two items); every delivery reads first whether its batch is
        // done already.
        let range_copies = u64::from(self.validating);
        let writes = self.batches * (2 + 4 + 2 + 2 * range_copies)
            + saves_with_batches * 2
            + self.tasks * 2
            + ranges * 8
            + splits;
        let query = 7;
        let timeline = ((timing.wall_secs * 100.0) / 4096.0).ceil() as u64;
        let reads =
            timing.polls * 2 * query + query + timeline + self.batches * (1 + 2 * range_copies);
        (writes, reads)
    }

    /// SQS: sends of up to 10 messages, each 64 KiB of payload billed as a
    /// request; a receive and a delete per copier invocation; per range
    /// task its receive, delete and the next task's send, and
    /// a look at the range queue's depth per ten pages listed; both
    /// mappings' idle polling for as long as the run lasts; a queue-depth
    /// read per poll.
    fn sqs_requests(&self, prices: &PriceTable, timing: &Timing) -> u64 {
        let chunk = prices.sqs.request_chunk_bytes.max(1);
        let chunks: u64 = self
            .inputs
            .batches
            .iter()
            .map(|b| b.body_bytes.div_ceil(chunk).max(1))
            .sum();
        let sends = chunks.max(self.batches.div_ceil(10));
        let idle_receives =
            (self.a.esm_idle_receives_per_minute * timing.wall_secs / 60.0).ceil() as u64;
        let listed = self.inputs.listed_source * (1 + u64::from(self.validating));
        let range_tasks = 3 * self.tasks + listed / CHECKPOINT_KEYS;
        sends + chunks + self.copier_invocations + 2 * idle_receives + timing.polls + range_tasks
    }

    fn invocations(&self, polls: u64) -> BTreeMap<String, u64> {
        let mut invocations = BTreeMap::new();
        invocations.insert("planner".to_owned(), 1);
        invocations.insert("lister".to_owned(), self.listers + self.validators);
        invocations.insert("copier".to_owned(), self.copier_invocations);
        invocations.insert("reporter".to_owned(), polls + 1);
        invocations
    }

    fn gb_seconds(&self, timing: &Timing) -> BTreeMap<String, f64> {
        let a = self.a;
        let start = a.function_start_ms / 1000.0;
        let gb = |mb: f64| mb / 1024.0;
        let mut gb_seconds = BTreeMap::new();
        gb_seconds.insert(
            "planner".to_owned(),
            gb(a.planner_memory_mb) * (start + 1.0),
        );
        let lister_secs = self.write.lister_secs + self.validate.lister_secs;
        gb_seconds.insert("lister".to_owned(), gb(a.lister_memory_mb) * lister_secs);
        gb_seconds.insert(
            "copier".to_owned(),
            gb(a.copier_memory_mb) * timing.copier_secs,
        );
        gb_seconds.insert(
            "reporter".to_owned(),
            gb(a.reporter_memory_mb) * (timing.polls + 1) as f64 * (start + 0.2),
        );
        gb_seconds
    }

    /// History events, as the execution records them: 9 a progress poll
    /// (CheckProgress's task events, its Choice, the Wait), 7 for starting
    /// VALIDATE, and 30 for the rest of the run. Listers run off the range
    /// queue, outside the execution, so shards and invocations add none.
    /// (Calibrated on moto's histories in `tests/serverless_scale.rs`.)
    fn history_events(&self, polls: u64) -> u64 {
        30 + 9 * polls + if self.stack.validate { 7 } else { 0 }
    }

    /// States entered, following sync.asl.json: Plan, StartWaiting, per
    /// poll CheckProgress + AreAllBatchesDone and a WaitForCopies between
    /// polls, ShouldValidate, StartValidate and VALIDATE's polls, then
    /// ShouldValidate again, Report, IsOverThreshold, SyncedNotice and
    /// ShouldNotifySynced, NotifySynced when the stack publishes run
    /// notifications, and the end.
    fn state_transitions(&self, polls: u64) -> u64 {
        let passes = if self.stack.validate { 2 } else { 1 };
        // Each pass's last poll is followed by no wait.
        let waiting = 3 * polls - passes;
        2 + waiting + 2 * passes + 5 + u64::from(self.stack.notifications)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10,000 batches of 100 small copies (80 ms each), as a lister cuts them.
    fn a_million_small_copies() -> (Vec<BatchCost>, Requests) {
        let batch = BatchCost {
            tasks: 100,
            body_bytes: 20_000,
            task_secs: 8.0,
            longest_task_secs: 0.08,
            deletes: 0,
        };
        let copies = Requests::from([("CopyObject".to_owned(), 1_000_000)]);
        (vec![batch; 10_000], copies)
    }

    #[test]
    fn a_million_new_objects_cost_what_the_stack_would_spend() {
        let (batches, copies) = a_million_small_copies();
        let estimate = estimate(
            StackShape {
                copier_concurrency: 50,
                copier_batch_size: 1,
                copier_task_concurrency: 16,
                shard_concurrency: 16,
                lister_streams: 1,
                lister_max_keys: 2_000_000,
                architecture: "arm64".into(),
                validate: true,
                notifications: false,
            },
            Inputs {
                shards: 64,
                shard_keys: &[],
                busiest_prefix_writes: 1_000_000 / 64,
                listed_source: 1_000_000,
                listed_destination: 0,
                destination_after: 1_000_000,
                transfer_requests: &copies,
                batches: &batches,
                planner_requests: &Requests::new(),
            },
            &PriceTable::built_in(),
        )
        .unwrap();
        assert_eq!(estimate.sqs_messages, 10_000);
        assert_eq!(estimate.lambda_invocations["copier"], 10_000);
        // A million CopyObjects at $5 per million dominate.
        let s3 = estimate.cost_usd["s3_requests"];
        assert!((5.0..5.2).contains(&s3), "{s3}");
        // 10,000 batches of 0.55 s each over 50 copiers: under 2 minutes,
        // listing a million keys over 16 listers about 36 s.
        assert!(
            (100.0..400.0).contains(&estimate.wall_secs),
            "{}",
            estimate.wall_secs
        );
        assert!(estimate.total_usd < 6.0, "{}", estimate.total_usd);
    }

    #[test]
    fn a_copier_sends_one_delete_objects_per_message_with_deletes() {
        let batch = |deletes| BatchCost {
            tasks: 100,
            body_bytes: 10_000,
            task_secs: 2.0,
            longest_task_secs: 0.03,
            deletes,
        };
        let batches = [batch(100), batch(100), batch(40), batch(0)];
        // 240 deletes: the local runtime's one request per thousand.
        let transfer = Requests::from([
            ("HeadObject".to_owned(), 240),
            ("DeleteObjects".to_owned(), 1),
            ("CopyObject".to_owned(), 160),
        ]);
        let estimate = estimate(
            StackShape {
                copier_concurrency: 50,
                copier_batch_size: 1,
                copier_task_concurrency: 16,
                shard_concurrency: 16,
                lister_streams: 1,
                lister_max_keys: 2_000_000,
                architecture: "arm64".into(),
                validate: false,
                notifications: false,
            },
            Inputs {
                shards: 1,
                shard_keys: &[],
                busiest_prefix_writes: 400,
                listed_source: 160,
                listed_destination: 240,
                destination_after: 160,
                transfer_requests: &transfer,
                batches: &batches,
                planner_requests: &Requests::new(),
            },
            &PriceTable::built_in(),
        )
        .unwrap();
        assert_eq!(estimate.s3_requests["DeleteObjects"], 3);
        assert_eq!(estimate.s3_requests["HeadObject"], 240);
    }

    #[test]
    fn an_unchanged_night_lists_each_side_once_and_checkpoints_every_ten_pages() {
        // (one stream an invocation: the counts per task are clearest)
        let a = PriceTable::built_in().assumptions;
        let run = |keys: u64| unchanged_night(stack_of(16), keys, &a);
        let night = run(100_000_000);
        // One page per 1,000 keys a side, plus each range's partial last
        // page; no second pass (VALIDATE would add 200,000 more).
        let listings = night.s3_requests["ListObjectsV2"];
        assert!((200_064..201_000).contains(&listings), "{listings}");
        // 100M keys: 64 shards of 1.56M keys, a stream listing both sides
        // at 1,750 keys a second (15 minutes a shard: a task of 780 s, the
        // rest taken by a stream free before its invocation stops pulling),
        // 16 at a time, and a range split off at the end, when streams run
        // out of shards
        let listers = night.lambda_invocations["lister"];
        // (three tasks a shard: 780 s, then the 96 s a stream free 120 s
        // before its deadline lists, then the rest; VALIDATE a task a
        // range, which ends at once: its 16 invocations pull them all)
        let tasks = night.lister_tasks;
        assert!((3 * 64 + 65..3 * 64 + 100).contains(&tasks), "{tasks}");
        let write_listers = listers - 16;
        assert!((64..100).contains(&write_listers), "{write_listers}");
        assert!((64..100).contains(&night.ranges), "{}", night.ranges);
        // AND 10,000 checkpoints, one at each task's end and its mark that
        // it handed on, what each range leaves VALIDATE, and the run's own
        // files
        assert_eq!(
            night.s3_requests["PutObject"],
            10_000 + 2 * tasks + night.ranges + 2
        );
        // AND the 64 shards, 16 at a time, take the time of four rounds
        // of 15 minutes
        assert_eq!(night.largest_shard_keys, 1_562_500);
        assert!(
            (3_500.0..3_700.0).contains(&night.listing_secs),
            "{}",
            night.listing_secs
        );
        // AND nothing sent: the counters hold only the ranges (sent and
        // done, 8 units each) and the listers' leases (2 units each)
        assert_eq!(
            night.dynamodb_write_units,
            2 * tasks + 8 * (night.ranges + night.ranges) + (night.ranges - 64)
        );
        // AND the history: the polls of an hour of listing (30 to reach
        // a minute's wait, then a twentieth of the time waited), and of a
        // VALIDATE that lists nothing; no event per shard or invocation
        let (write_polls, _) = polls_for(night.listing_secs);
        assert!((50..70).contains(&write_polls), "{write_polls}");
        assert_eq!(
            night.history_events,
            30 + 9 * (write_polls + polls_for(0.0).0) + 7
        );
    }

    /// A first copy of `keys` small new objects, in batches of 100 as the
    /// listers cut them, `busiest` of them under one top-level prefix.
    fn first_copy(
        stack: StackShape,
        keys: u64,
        busiest: u64,
        a: &Assumptions,
    ) -> ServerlessEstimate {
        let batches = vec![BatchCost::small_copies(100, a); keys.div_ceil(100) as usize];
        let copies = Requests::from([("CopyObject".to_owned(), keys)]);
        let mut prices = PriceTable::built_in();
        prices.assumptions = a.clone();
        let shards = 4 * stack.shard_concurrency;
        estimate(
            stack,
            Inputs {
                shards,
                shard_keys: &[],
                busiest_prefix_writes: busiest,
                listed_source: keys,
                listed_destination: 0,
                destination_after: keys,
                transfer_requests: &copies,
                batches: &batches,
                planner_requests: &Requests::new(),
            },
            &prices,
        )
        .unwrap()
    }

    #[test]
    fn a_first_copy_of_100m_over_100_prefixes_keeps_up_with_s3() {
        // GIVEN 100M small new objects, a million under each of 100
        // top-level prefixes: S3 takes them in 286 s at the least
        let a = PriceTable::built_in().assumptions;
        let (keys, busiest) = (100_000_000, 1_000_000);
        let defaults = StackShape {
            lister_streams: 8,
            ..stack_of(16)
        };
        // WHEN the stack's defaults copy them
        let slow = first_copy(defaults.clone(), keys, busiest, &a);
        assert!((285.0..286.0).contains(&slow.partition_bound_secs));
        // THEN 50 copiers of 16 copies in flight set the pace: hours
        assert!(slow.wall_secs > 3.0 * 3600.0, "{}", slow.wall_secs);
        // WHEN the first-copy settings copy them
        let fast = first_copy(defaults.clone().for_a_first_copy(), keys, busiest, &a);
        // THEN the copies are done within 1.25x S3's bound, the event
        // source's ramp included
        assert!(
            fast.write_secs <= 1.25 * fast.partition_bound_secs,
            "{} s against {} s",
            fast.write_secs,
            fast.partition_bound_secs
        );
        // AND VALIDATE, listing each range again as its copies end, is
        // left with the ranges copied last: more than 10 s after the
        // copies (its listers ramping from 5 again), and the whole run
        // within 1.25x
        assert!(fast.wall_secs > fast.write_secs + 10.0);
        assert!(
            fast.wall_secs <= 1.25 * fast.partition_bound_secs,
            "{} s",
            fast.wall_secs
        );
        // AND no more than half a dollar more than the slow run's copies:
        // longer invocations, fewer of them
        assert!(
            fast.total_usd < slow.total_usd + 0.5,
            "{} {}",
            fast.total_usd,
            slow.total_usd
        );
        assert_eq!(fast.lambda_invocations["copier"], 100_000);
    }

    #[test]
    fn copiers_ramp_as_the_event_source_adds_them() {
        // GIVEN a million small copies over 100 prefixes, and 1,000 copiers
        // allowed
        let a = PriceTable::built_in().assumptions;
        let mut stack = stack_of(64);
        stack.copier_concurrency = 1_000;
        let ramped = first_copy(stack.clone(), 1_000_000, 10_000, &a);
        // WHEN the event source started all 1,000 at once
        let mut all_at_once = a.clone();
        all_at_once.esm_start_invocations = 1_000.0;
        let instant = first_copy(stack, 1_000_000, 10_000, &all_at_once);
        // THEN they'd copy a million in about 10,000 batches' time over
        // 1,000 copiers (10 x 0.61 s) after the listing; ramping by 300 a
        // minute from 5 takes more than half a minute longer
        assert!(
            ramped.write_secs > instant.write_secs + 30.0,
            "{} {}",
            ramped.write_secs,
            instant.write_secs
        );
    }

    /// VALIDATE's tail after the copies of 10M keys (40 s of listing, then
    /// 100 s of copies at a steady pace), for write-phase ranges that
    /// ended their listings at `ends`, on `listers` listers of 10 streams.
    fn validate_tail_of(ends: Vec<(f64, u64)>, listers: u64) -> f64 {
        let a = PriceTable::built_in().assumptions;
        let keys = 10_000_000;
        let stack = StackShape {
            lister_streams: 10,
            ..stack_of(listers)
        };
        let no_requests = Requests::new();
        let inputs = Inputs {
            shards: ends.len() as u64,
            shard_keys: &[],
            busiest_prefix_writes: keys,
            listed_source: keys,
            listed_destination: 0,
            destination_after: keys,
            transfer_requests: &no_requests,
            batches: &[],
            planner_requests: &no_requests,
        };
        let write = Pass {
            ranges: ends.len() as u64,
            wall_secs: 40.0,
            ends,
            ..Pass::default()
        };
        let run = Run {
            stack: &stack,
            inputs: &inputs,
            a: &a,
            shards: 1,
            batches: 1,
            copier_invocations: 1,
            listers: 1,
            validators: 1,
            tasks: 1,
            write,
            validate: Pass::default(),
            validating: true,
        };
        let copies = CopyPhase {
            tasks: keys as f64,
            per_copier: 1e9,
            copiers: 1.0,
            s3_rate: keys as f64 / 100.0,
            listing_secs: 40.0,
        };
        let progress = copies.progress(&a);
        run.validate_tail(&copies, &progress, 0.0)
    }

    #[test]
    fn validate_lists_a_range_as_its_copies_end_and_is_left_with_the_last() {
        // GIVEN 100 ranges of 100,000 keys whose listings ended evenly
        // over the write phase's 40 s
        let even: Vec<(f64, u64)> = (1..=100).map(|i| (0.4 * i as f64, 100_000)).collect();
        // WHEN their copies take 100 s, in the order sent
        let tail = validate_tail_of(even.clone(), 16);
        // THEN VALIDATE lists all but the last few while the copies run:
        // what is left after them takes less than the 100,000 keys one
        // stream lists in 57 s
        assert!(tail < 57.0, "{tail}");
        // WHEN every range ended its listing with the write phase's (its
        // last batch sent last, so copied last)
        let late: Vec<(f64, u64)> = (0..100).map(|_| (40.0, 100_000)).collect();
        let all_after = validate_tail_of(late, 16);
        // THEN nothing overlaps: VALIDATE lists all 10M after the copies,
        // its listers ramping from 5
        assert!(all_after > tail + 10.0, "{all_after} against {tail}");
        // AND with one lister for ranges copied faster than it lists them,
        // most wait for it, and are left after the copies
        let one = validate_tail_of(even, 1);
        assert!(one > tail + 10.0, "{one} against {tail}");
    }

    fn stack_of(shard_concurrency: u64) -> StackShape {
        StackShape {
            copier_concurrency: 50,
            copier_batch_size: 1,
            copier_task_concurrency: 16,
            shard_concurrency,
            lister_streams: 1,
            lister_max_keys: 2_000_000,
            architecture: "arm64".into(),
            validate: true,
            notifications: false,
        }
    }

    /// An unchanged night of `keys` in 64 even shards on `stack`.
    fn unchanged_night(stack: StackShape, keys: u64, a: &Assumptions) -> ServerlessEstimate {
        let mut prices = PriceTable::built_in();
        prices.assumptions = a.clone();
        estimate(
            stack,
            Inputs {
                shards: 64,
                shard_keys: &[],
                busiest_prefix_writes: 0,
                listed_source: keys,
                listed_destination: keys,
                destination_after: keys,
                transfer_requests: &Requests::new(),
                batches: &[],
                planner_requests: &Requests::new(),
            },
            &prices,
        )
        .unwrap()
    }

    #[test]
    fn streams_share_an_invocations_billed_seconds() {
        // GIVEN 100M unchanged keys, 16 lister invocations at once
        let a = PriceTable::built_in().assumptions;
        let with = |streams: u64| {
            let mut stack = stack_of(16);
            stack.lister_streams = streams;
            unchanged_night(stack, 100_000_000, &a)
        };
        let (one, eight) = (with(1), with(8));
        // THEN eight streams an invocation list about eight times as fast
        assert!(
            eight.listing_secs < one.listing_secs / 7.0,
            "{} against {}",
            eight.listing_secs,
            one.listing_secs
        );
        // AND bill about an eighth of the lister seconds: idle streams
        // (waiting at the end for the last ranges) cost a little
        let lister = |e: &ServerlessEstimate| e.lambda_gb_seconds["lister"];
        assert!(
            lister(&eight) < lister(&one) / 7.0,
            "{} against {}",
            lister(&eight),
            lister(&one)
        );
        // AND at the stack's defaults (16 invocations of 8 streams) the
        // night meets the goal: 100M keys in under 10 minutes, for at most
        // $1.20, of which the 200,000 listings are $1.00 (and the
        // checkpoints, a PUT per ten pages, $0.05)
        assert!(eight.wall_secs < 600.0, "{}", eight.wall_secs);
        assert!(eight.total_usd <= 1.20, "{:?}", eight.cost_usd);
        let s3 = eight.cost_usd["s3_requests"];
        assert!((1.0..1.1).contains(&s3), "{:?}", eight.cost_usd);
    }

    #[test]
    fn a_listers_share_of_a_vcpu_caps_its_streams() {
        // GIVEN a lister whose keys cost 40 µs of CPU each (both sides of
        // a stream at 1,750 keys a second: 0.14 vCPU a stream), with 512 MB
        // (0.29 vCPU)
        let mut a = PriceTable::built_in().assumptions;
        a.lister_cpu_us_per_key = 40.0;
        a.lister_memory_mb = 512.0;
        let night = |streams: u64, a: &Assumptions| {
            let mut stack = stack_of(16);
            stack.lister_streams = streams;
            unchanged_night(stack, 10_000_000, a).listing_secs
        };
        // THEN two streams are as many as it can parse: eight list no
        // faster than two
        let (two, eight) = (night(2, &a), night(8, &a));
        assert!(eight > 0.9 * two, "{eight} against {two}");
        // AND with the CPU to spare, eight are four times as fast
        a.lister_cpu_us_per_key = 5.0;
        let (two, eight) = (night(2, &a), night(8, &a));
        assert!(eight < two / 3.5, "{eight} against {two}");
    }

    #[test]
    fn a_hot_shard_is_split_until_every_lister_has_a_share() {
        // GIVEN 100M unchanged keys in 256 shards, one holding 90M of them
        let mut skewed = vec![10_000_000 / 255; 255];
        skewed.push(90_000_000);
        let even = vec![100_000_000 / 256; 256];
        let night = |shard_keys: &[u64]| {
            estimate(
                stack_of(256),
                Inputs {
                    shards: 256,
                    shard_keys,
                    busiest_prefix_writes: 0,
                    listed_source: 100_000_000,
                    listed_destination: 100_000_000,
                    destination_after: 100_000_000,
                    transfer_requests: &Requests::new(),
                    batches: &[],
                    planner_requests: &Requests::new(),
                },
                &PriceTable::built_in(),
            )
            .unwrap()
        };
        let (skewed, even) = (night(&skewed), night(&even));
        // THEN even shards, all at once, list in under 8 minutes, and the
        // hot one, alone 14 hours at 1,750 keys a second, is split while
        // it is listed until the 256 listers share it: within a quarter
        // of the even night's time
        assert!(even.listing_secs < 8.0 * 60.0, "{}", even.listing_secs);
        assert!(
            skewed.listing_secs < 1.25 * even.listing_secs,
            "{} against {}",
            skewed.listing_secs,
            even.listing_secs
        );
        assert_eq!(skewed.largest_shard_keys, 90_000_000);
        assert!(skewed.ranges > 256 + 200, "{}", skewed.ranges);
    }

    #[test]
    fn a_fast_lister_ends_its_pass() {
        // GIVEN the local stack's shape: listers 7 times FIELD.md's rate,
        // invocations of 20 s (a key then took less than the 1 ms the
        // simulation's clock once ticked in, and the pass never ended)
        let mut a = PriceTable::built_in().assumptions;
        a.list_keys_per_second = 12_436.0 / 2.0;
        a.lister_cpu_us_per_key = 0.0;
        a.lister_timeout_secs = 25.0;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let shards = vec![10_000; 101];
            let sides = (1_010_000, 1_010_000);
            let _ = tx.send(listing_pass(&shards, sides, (2_000_000, 4, 1), &a));
        });
        // THEN it ends, each key listed at that rate on 4 listers
        let pass = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the pass ends");
        let ideal = 2.0 * 1_010_000.0 / 12_436.0 / 4.0;
        assert!(
            (ideal..ideal * 1.2).contains(&pass.wall_secs),
            "{} s against {ideal} s",
            pass.wall_secs
        );
    }

    #[test]
    fn copies_into_one_prefix_wait_for_s3s_partition() {
        // GIVEN a million new objects, all under one top-level prefix, and
        // copiers enough to send 10,000 a second
        let (batches, copies) = a_million_small_copies();
        let run = |busiest_prefix_writes| {
            let mut stack = stack_of(64);
            stack.copier_concurrency = 1_000;
            estimate(
                stack,
                Inputs {
                    shards: 64,
                    shard_keys: &[],
                    busiest_prefix_writes,
                    listed_source: 1_000_000,
                    listed_destination: 0,
                    destination_after: 1_000_000,
                    transfer_requests: &copies,
                    batches: &batches,
                    planner_requests: &Requests::new(),
                },
                &PriceTable::built_in(),
            )
            .unwrap()
        };
        // THEN one prefix takes them at 3,500 a second: 286 s at least
        let one = run(1_000_000);
        assert!((285.0..286.0).contains(&one.partition_bound_secs));
        assert!(one.wall_secs > one.partition_bound_secs);
        // AND spread over 100 prefixes, the copiers set the pace
        let spread = run(10_000);
        assert!(
            spread.wall_secs < one.wall_secs / 2.0,
            "{} {}",
            spread.wall_secs,
            one.wall_secs
        );
        // AND each batch costs 8 write units of the run counters
        assert!(one.dynamodb_write_units >= 80_000);
        assert!(one.cost_usd["dynamodb"] < 0.1);
    }
}
