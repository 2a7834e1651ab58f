//! The serverless runtime at a size it exists for (issue 21): the real
//! state machine (moto's Step Functions) and handlers (the local stack)
//! against buckets served by the synthetic endpoint
//! (`scripts/bench/synthetic_s3.py`), which the fault proxy routes `syn-*`
//! buckets to; the run's own state stays in moto.
//!
//! Two runs, each asserting the structure a 100M-key night depends on:
//! - an unchanged pair of a million keys: every key listed once on each
//!   side (counted by the run and by the endpoint's pages), no range's
//!   chain of range tasks more than twice the mean, no batch and no
//!   VALIDATE listing;
//! - a first copy into an empty bucket (`…-copy`, which keeps what is
//!   copied): every key copied once, the 6 GiB objects by part copies,
//!   nothing left open, VALIDATE finding every copy.
//!
//! Both: progress and report without a read per batch, the reporter's peak
//! heap within a fixed bound, and a history that grows with polls only.
//!
//! `S3_FANOUT_SCALE_KEYS`, `S3_FANOUT_SCALE_COPY_KEYS` and
//! `S3_FANOUT_SCALE_LAYOUTS` (comma-separated: dirs, flat, uuid, skewed)
//! change the sizes and layouts; CI runs a million keys unchanged and a
//! first copy of 100,000 in the `dirs` layout,
//! `scripts/bench-serverless-scale.sh` more. The figures are printed
//! (`--nocapture`).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value;
use support::local_stack::{one_run_at_a_time, stack_with};
use support::synthetic::Synthetic;
use support::*;

/// The heap in use and its peak, for the reporter's peak memory: the
/// process's allocator, counted (the local stack runs the handlers in this
/// process; the report is measured with the stack idle).
struct PeakAlloc;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// The reporter's fixed bound: its memory must not grow with batches.
const REPORTER_PEAK_BOUND: usize = 64 << 20;

/// The whole local stack's bound while a run lists and copies.
const STACK_PEAK_BOUND: usize = 256 << 20;

fn size(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn keys() -> u64 {
    size("S3_FANOUT_SCALE_KEYS", 1_000_000)
}

fn copy_keys() -> u64 {
    size("S3_FANOUT_SCALE_COPY_KEYS", 100_000)
}

fn layouts() -> Vec<String> {
    std::env::var("S3_FANOUT_SCALE_LAYOUTS")
        .unwrap_or_else(|_| "dirs".into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// The stack as deployed, but for its moto: the default 2M keys a lister
/// invocation (the test stacks of other binaries use 7), one delivery each,
/// and the work queue's visibility timeout 6x the copier's timeout, as the
/// template sets it (other binaries use 6 s to see crashed batches again
/// soon). With 6 s, a batch that took longer on this loaded machine was
/// delivered again while its copier still worked: a 1M-key copy delivered a
/// third of its batches twice or three times.
fn stack() -> &'static support::local_stack::TestStack {
    stack_with(|options| {
        options.lister_max_keys = None;
        options.duplicate_deliveries = false;
        options.copier_timeout = std::time::Duration::from_secs(60);
        options.visibility_timeout_secs = 360;
    })
}

/// What one run did, as the figures the issue asks for.
struct Figures {
    wall_secs: f64,
    /// Ranges listed in the write phase: the planner's and the splits'.
    ranges: usize,
    /// Range tasks of the write phase (a checkpoint each).
    range_tasks: usize,
    /// Range tasks (both passes) each lister invocation listed, by its
    /// request id in the listers' metrics: its streams, and what they pulled.
    tasks_by_invocation: BTreeMap<String, usize>,
    /// Keys listed (source side, write phase) by each range's chain of
    /// tasks.
    chain_keys: Vec<u64>,
    /// Keys listed by each write-phase task.
    task_keys: Vec<u64>,
    /// The local stack's heap at its peak during the run, above where it
    /// started: every function running here (4 listers of 2 streams, the
    /// copiers, the reporter) together, so a bound on any one of them.
    stack_peak: usize,
    history_events: usize,
    polls: usize,
    requests: BTreeMap<String, u64>,
    dynamodb: BTreeMap<String, usize>,
    reporter_peak: usize,
}

impl Figures {
    fn largest_chain(&self) -> u64 {
        self.chain_keys.iter().copied().max().unwrap_or(0)
    }

    fn mean_chain(&self) -> f64 {
        self.chain_keys.iter().sum::<u64>() as f64 / self.ranges.max(1) as f64
    }

    fn requests(&self, op: &str) -> u64 {
        self.requests.get(op).copied().unwrap_or(0)
    }

    fn print_header() {
        println!(
            "| run | keys | wall | ranges | range tasks | lister invocations (tasks at most) | largest chain / mean | keys per task (max) | polls | history events | stack peak | reporter peak | S3 requests | DynamoDB |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    }

    fn print(&self, run: &str, n: u64) {
        println!(
            "| {run} | {n} | {:.1} s | {} | {} | {} ({}) | {:.2} | {} | {} | {} | {:.1} MiB | {:.1} MiB | {:?} | {:?} |",
            self.wall_secs,
            self.ranges,
            self.range_tasks,
            self.tasks_by_invocation.len(),
            self.tasks_by_invocation.values().max().unwrap_or(&0),
            self.largest_chain() as f64 / self.mean_chain(),
            self.task_keys.iter().max().unwrap_or(&0),
            self.polls,
            self.history_events,
            self.stack_peak as f64 / (1 << 20) as f64,
            self.reporter_peak as f64 / (1 << 20) as f64,
            self.requests,
            self.dynamodb
        );
    }

    /// What holds for any run: the history grows with polls (9 events
    /// each, 30 fixed, 7 more with a VALIDATE pass), not with ranges,
    /// invocations or batches; progress reads counters, not results; the
    /// reporter's heap has a bound.
    fn assert_bounded(&self, run: &str) {
        let most = 50 + 10 * self.polls;
        assert!(
            self.history_events <= most,
            "{run}: {} history events for {} polls",
            self.history_events,
            self.polls
        );
        let queries = self.dynamodb.get("Query").copied().unwrap_or(0);
        assert!(
            queries <= 40 + 4 * self.polls,
            "{run}: {queries} Queries for {} polls: {:?}",
            self.polls,
            self.dynamodb
        );
        assert!(
            self.reporter_peak <= REPORTER_PEAK_BOUND,
            "{run}: the reporter's heap peaked at {} bytes",
            self.reporter_peak
        );
        // A lister lists ListerStreams tasks at once, and its free streams
        // take more off the queue: invocations hold several tasks, and
        // some more than their event's batch of 2 (they pulled).
        let most = self
            .tasks_by_invocation
            .values()
            .copied()
            .max()
            .unwrap_or(0);
        assert!(
            most > 2 && self.tasks_by_invocation.len() < self.range_tasks,
            "{run}: {} invocations for {} write tasks, at most {most} tasks in one",
            self.tasks_by_invocation.len(),
            self.range_tasks
        );
        // All the functions at once, 8 streams among them, in what one
        // lister of the template's 512 MB would hold with room to spare.
        assert!(
            self.stack_peak <= STACK_PEAK_BOUND,
            "{run}: the stack's heap peaked at {} bytes",
            self.stack_peak
        );
    }
}

/// One run and its figures. The caller holds [`one_run_at_a_time`]: the
/// endpoint's counts, the proxy's log and the heap are the whole binary's.
fn run(source: &str, destination: &str, run_id: &str, synthetic: &Synthetic) -> (Value, Figures) {
    let outputs = stack().outputs_file.display().to_string();
    let before = synthetic.counts()["ops"].clone();
    stack().proxy.clear_log();
    let baseline = IN_USE.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let started = Instant::now();
    let out = run_cli(&[
        "run",
        "--stack-outputs",
        &outputs,
        "--wait",
        "--json",
        &format!("s3://{source}"),
        &format!("s3://{destination}"),
        "--run-id",
        run_id,
    ]);
    let wall_secs = started.elapsed().as_secs_f64();
    let stack_peak = PEAK.load(Ordering::SeqCst).saturating_sub(baseline);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).expect("the report");
    let after = synthetic.counts()["ops"].clone();
    let requests = after
        .as_object()
        .expect("counts by operation")
        .iter()
        .map(|(op, n)| {
            let was = before[op].as_u64().unwrap_or(0);
            (op.clone(), n.as_u64().unwrap_or(0) - was)
        })
        .filter(|(op, n)| *n > 0 && op != "Control")
        .collect();
    let dynamodb = stack()
        .proxy
        .requests()
        .iter()
        .filter_map(|r| r.target.as_deref()?.strip_prefix("DynamoDB_20120810."))
        .fold(BTreeMap::new(), |mut by, op| {
            *by.entry(op.to_owned()).or_insert(0) += 1;
            by
        });
    let checkpoints = read_checkpoints(run_id);
    let mut chains: BTreeMap<usize, u64> = BTreeMap::new();
    for c in &checkpoints {
        *chains.entry(c.shard).or_default() += c.counts.listed_source;
    }
    let (history_events, polls) = history(run_id);
    let figures = Figures {
        wall_secs,
        ranges: chains.len(),
        range_tasks: checkpoints.len(),
        tasks_by_invocation: lister_invocations(run_id),
        chain_keys: chains.into_values().collect(),
        task_keys: checkpoints.iter().map(|c| c.counts.listed_source).collect(),
        stack_peak,
        history_events,
        polls,
        requests,
        dynamodb,
        reporter_peak: reporter_peak(run_id),
    };
    (summary, figures)
}

/// Range tasks each lister invocation of `run_id` listed: the listers'
/// metric records (one a task), by the invocation's request id.
fn lister_invocations(run_id: &str) -> BTreeMap<String, usize> {
    let log = std::fs::read_to_string(&stack().emf_log).expect("the EMF log");
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|r| {
            r["run_id"] == run_id
                && r["FunctionName"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("-lister"))
        })
        .fold(BTreeMap::new(), |mut by, r| {
            let invocation = r["invocation"].as_str().unwrap_or_default().to_owned();
            *by.entry(invocation).or_default() += 1;
            by
        })
}

/// The heap the report of a finished run takes at its peak, above what the
/// idle process holds: the reporter run again, as a retried Report state
/// would, with the allocator's peak reset first.
fn reporter_peak(run_id: &str) -> usize {
    let (env, run_id) = (stack().env.clone(), run_id.to_owned());
    let runtime = stack().runtime.clone();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let baseline = IN_USE.load(Ordering::Relaxed);
            PEAK.store(baseline, Ordering::Relaxed);
            let outcome = s3_fanout::serverless::reporter::report(&env, &run_id, None).await;
            let peak = PEAK.load(Ordering::Relaxed);
            outcome.expect("the report, again");
            peak - baseline
        })
    })
    .join()
    .expect("stack task")
}

/// The run's write checkpoints, one per range task.
fn read_checkpoints(run_id: &str) -> Vec<s3_fanout::serverless::contract::Checkpoint> {
    let (store, run_id) = (stack().env.store.clone(), run_id.to_owned());
    let runtime = stack().runtime.clone();
    std::thread::spawn(move || {
        runtime.block_on(async move { store.get_all(&run_id, "sent/").await })
    })
    .join()
    .expect("stack task")
    .expect("the run's checkpoints")
    .into_iter()
    .map(|(_, c)| c)
    .collect()
}

/// Events in the execution's history, and its progress polls (entries
/// into CheckProgress).
fn history(run_id: &str) -> (usize, usize) {
    let arn = stack().outputs.execution_arn(run_id);
    let settings = s3_fanout::base::client::ClientSettings {
        endpoint_url: Some(moto().endpoint.clone()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    let runtime = stack().runtime.clone();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let sfn = s3_fanout::base::client::build_sfn_client(&settings).await;
            let (mut events, mut polls) = (0, 0);
            let mut token = None;
            loop {
                let page = sfn
                    .get_execution_history()
                    .execution_arn(&arn)
                    .max_results(1000)
                    .set_next_token(token)
                    .send()
                    .await
                    .expect("the execution's history");
                events += page.events().len();
                polls += page
                    .events()
                    .iter()
                    .filter_map(|e| e.state_entered_event_details())
                    .filter(|d| d.name() == "CheckProgress")
                    .count();
                token = page.next_token().map(str::to_owned);
                if token.is_none() {
                    return (events, polls);
                }
            }
        })
    })
    .join()
    .expect("stack task")
}

#[test]
fn an_unchanged_pair_of_a_million_keys_lists_each_key_once_in_even_chains() {
    let synthetic = Synthetic::shared(&stack().proxy);
    let n = keys();
    Figures::print_header();
    for layout in layouts() {
        let (source, destination) = (
            format!("syn-{n}-{layout}"),
            format!("syn-{n}-{layout}-twin"),
        );
        let run_id = unique_bucket(&format!("scale-{layout}"));
        let _turn = one_run_at_a_time();
        let listed_before = synthetic.counts()["keys"].clone();
        let (summary, f) = run(&source, &destination, &run_id, synthetic);
        f.print(&format!("unchanged, {layout}"), n);
        // THEN every key was listed once on each side and found equal
        assert_eq!(summary["status"], "ok", "{summary}");
        assert_eq!(count(&summary, "listed_source"), n, "{layout}");
        assert_eq!(count(&summary, "listed_destination"), n, "{layout}");
        assert_eq!(count(&summary, "skip_equal"), n, "{layout}");
        assert_eq!(count(&summary, "copied"), 0);
        // AND so did the endpoint count them: each key served once a side
        // by the listers, but for where a range or an invocation stops: a
        // listing runs up to two pages ahead of its consumer
        // (backend/s3/listing.rs), so up to three pages of 1,000 keys are
        // read past each stop (the planner's delimiter listings are
        // counted apart)
        let listed = synthetic.counts()["keys"].clone();
        let partial = 3_000 * (f.ranges + f.range_tasks) as u64;
        for bucket in [&source, &destination] {
            let served =
                listed[bucket].as_u64().unwrap_or(0) - listed_before[bucket].as_u64().unwrap_or(0);
            assert!(
                (n..=n + partial).contains(&served),
                "{layout}: {served} keys of {bucket} served for {n}, {} ranges",
                f.ranges
            );
        }
        // AND each side once: a page per 1,000 keys of each range (its
        // last one partly full), no VALIDATE listing (nothing was sent)
        assert_eq!(count(&summary, "verify_checked"), 0);
        let pages = f.requests("ListObjectsV2");
        let most_pages = 2 * (n / 1000 + f.ranges as u64 + 1) + f.ranges as u64 + 110;
        assert!(
            (2 * n / 1000..=most_pages).contains(&pages),
            "{layout}: {pages} pages for {n} keys a side"
        );
        // AND the chains are even: none lists more than twice the mean
        let mean = f.mean_chain();
        assert!(
            (f.largest_chain() as f64) <= 2.0 * mean,
            "{layout}: a chain of {} keys, mean {mean:.0}: {:?}",
            f.largest_chain(),
            f.chain_keys
        );
        f.assert_bounded(&format!("unchanged, {layout}"));
    }
}

#[test]
fn a_first_copy_copies_every_key_once_and_validates_it() {
    let synthetic = Synthetic::shared(&stack().proxy);
    let n = copy_keys();
    // Every 100,000th object of a -big bucket is 6 GiB: past CopyObject's
    // limit, so copied by part tasks.
    let big = n / 100_000;
    Figures::print_header();
    for layout in layouts() {
        let (source, destination) = (
            format!("syn-{n}-{layout}-big"),
            format!("syn-{n}-{layout}-copy"),
        );
        let run_id = unique_bucket(&format!("scale-copy-{layout}"));
        let _turn = one_run_at_a_time();
        let (summary, f) = run(&source, &destination, &run_id, synthetic);
        f.print(&format!("first copy, {layout}"), n);
        // THEN every key was copied, once: one CopyObject a small object,
        // the big ones in parts, and the destination holds them all
        assert_eq!(summary["status"], "ok", "{summary}");
        assert_eq!(count(&summary, "listed_source"), n, "{layout}");
        assert_eq!(count(&summary, "copied"), n, "{summary}");
        assert_eq!(f.requests("CopyObject"), n - big, "{:?}", f.requests);
        assert_eq!(
            f.requests("CompleteMultipartUpload"),
            big,
            "{:?}",
            f.requests
        );
        assert_eq!(f.requests("AbortMultipartUpload"), 0, "{:?}", f.requests);
        assert_eq!(
            synthetic.counts()["written"][&destination].as_u64(),
            Some(n),
            "{layout}"
        );
        // AND VALIDATE found every copy: the destination listed once
        // after the copies
        assert_eq!(count(&summary, "failed"), 0, "{summary}");
        assert_eq!(count(&summary, "verify_checked"), n, "{summary}");
        f.assert_bounded(&format!("first copy, {layout}"));
    }
}
