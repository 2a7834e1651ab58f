//! A lister invocation's streams: it lists up to `lister_streams` range
//! tasks at once (a stream a side each), the ones its event delivered and,
//! whenever a stream is free, more taken off the range queue itself.
//!
//! Why: a lister waits on round trips, not on its CPU (a page of 1,000
//! keys costs it well under a millisecond), so a billed second with one
//! stream a side is mostly idle. Several tasks in one invocation share the
//! second, as the CLI's pieces share one process; each keeps its own
//! lease, checkpoints and hand-on ([`super::lister`]), so nothing about a
//! task changes with the invocation it runs in.
//!
//! Why it pulls as well: the event source mapping fills an invocation only
//! at its start (BatchSize is `lister_streams`), and a task may end in
//! seconds while another runs to the deadline. A free stream takes the
//! next waiting task (ReceiveMessage, the mapping's own call with the
//! function's own role), so the invocation keeps its streams busy until
//! its time is nearly out, and a range another stream splits off at a
//! checkpoint (which it does when no task waits) is picked up here.
//! A pulled task is deleted once handed on; one that fails, or whose
//! lease another lister holds, is left to reappear after the visibility
//! timeout, as a delivered one handed back does, and counts towards the
//! queue's `maxReceiveCount` the same way.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};

use crate::serverless::FunctionEnv;

/// The longest a free stream waits on the queue in one receive (long
/// polling) before it looks again at whether its invocation has work left.
const PULL_WAIT_SECS: i32 = 5;

/// One range task, as a stream takes it.
enum Taken {
    /// From the invocation's event: handed back in the batch response.
    Delivered { message_id: String },
    /// Pulled off the queue: deleted by receipt handle once done.
    Pulled { receipt_handle: String },
}

/// What the streams of one invocation share.
struct Shared<'a> {
    env: &'a FunctionEnv,
    /// Tasks taken but not yet started: the event's, then pulled ones.
    waiting: Mutex<VecDeque<(Option<String>, Taken)>>,
    /// One stream pulls at a time, for all the free ones.
    pulling: tokio::sync::Mutex<()>,
    /// Streams listing a task right now.
    busy: AtomicUsize,
    /// The queue had nothing while no stream listed: the invocation ends.
    finished: AtomicBool,
    pull_until: SystemTime,
    slots: usize,
    handed_back: Mutex<Vec<BatchItemFailure>>,
}

/// Run `work` over the event's `records` and what the streams pull, up to
/// `lister_streams` at once, until the queue has nothing for a free stream
/// while none lists, or the invocation's time to pull is over. `work`
/// takes a task's body and says whether the task is done with (handed on,
/// or a duplicate dropped); a task it is not done with is handed back.
pub async fn run<W, F>(
    env: &FunctionEnv,
    records: Vec<SqsMessage>,
    deadline: SystemTime,
    work: W,
) -> SqsBatchResponse
where
    W: Fn(Option<String>) -> F,
    F: Future<Output = bool>,
{
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let pull_until = deadline
        .checked_sub(crate::model::deadlines::pull_margin(left))
        .unwrap_or(deadline);
    let waiting = records
        .into_iter()
        .map(|r| {
            let message_id = r.message_id.unwrap_or_default();
            (r.body, Taken::Delivered { message_id })
        })
        .collect();
    let shared = Shared {
        env,
        waiting: Mutex::new(waiting),
        pulling: tokio::sync::Mutex::new(()),
        busy: AtomicUsize::new(0),
        finished: AtomicBool::new(false),
        pull_until,
        slots: env.config.lister_streams.max(1),
        handed_back: Mutex::new(Vec::new()),
    };
    futures::future::join_all((0..shared.slots).map(|_| stream(&shared, &work))).await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = shared
        .handed_back
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    response
}

/// One stream: the next waiting task, else a pulled one, until none comes.
async fn stream<W, F>(shared: &Shared<'_>, work: &W)
where
    W: Fn(Option<String>) -> F,
    F: Future<Output = bool>,
{
    while let Some((body, taken)) = next(shared).await {
        let done = work(body).await;
        shared.busy.fetch_sub(1, Ordering::SeqCst);
        match (done, taken) {
            (false, Taken::Delivered { message_id }) => {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id;
                lock(&shared.handed_back).push(failure);
            }
            (true, Taken::Pulled { receipt_handle }) => delete(shared.env, &receipt_handle).await,
            // Delivered and done: the event source deletes it. Pulled and
            // not done: it reappears after the visibility timeout.
            _ => {}
        }
    }
}

/// The next task for a free stream, counted busy: a waiting one, else what
/// a receive brings for the free streams. `None` once the queue had
/// nothing while no stream listed, or the time to pull is over.
async fn next(shared: &Shared<'_>) -> Option<(Option<String>, Taken)> {
    loop {
        if let Some(task) = take_waiting(shared) {
            return Some(task);
        }
        if shared.finished.load(Ordering::SeqCst) {
            return None;
        }
        let _pulling = shared.pulling.lock().await;
        if let Some(task) = take_waiting(shared) {
            return Some(task);
        }
        let now = SystemTime::now();
        let Ok(left) = shared.pull_until.duration_since(now) else {
            return None;
        };
        let free = shared
            .slots
            .saturating_sub(shared.busy.load(Ordering::SeqCst))
            .clamp(1, 10);
        // Wait on the queue only while another stream lists: it may split
        // its range for this one. With none listing, one look is enough.
        let wait = if shared.busy.load(Ordering::SeqCst) == 0 {
            0
        } else {
            (left.as_secs() as i32).clamp(0, PULL_WAIT_SECS)
        };
        let pulled = receive(shared.env, free as i32, wait).await;
        if pulled.is_empty() && shared.busy.load(Ordering::SeqCst) == 0 {
            shared.finished.store(true, Ordering::SeqCst);
            return None;
        }
        lock(&shared.waiting).extend(pulled);
    }
}

fn take_waiting(shared: &Shared<'_>) -> Option<(Option<String>, Taken)> {
    let task = lock(&shared.waiting).pop_front()?;
    shared.busy.fetch_add(1, Ordering::SeqCst);
    Some(task)
}

/// Up to `max` range tasks off the queue, waiting up to `wait` seconds for
/// one. A failed receive brings none: the streams already listing go on,
/// and the event source delivers what waits to another invocation.
async fn receive(env: &FunctionEnv, max: i32, wait: i32) -> Vec<(Option<String>, Taken)> {
    let Some(queue) = env.config.range_queue_url.as_deref() else {
        return Vec::new();
    };
    let received = env
        .sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(max)
        .wait_time_seconds(wait)
        .send()
        .await;
    match received {
        Ok(output) => output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receipt_handle = m.receipt_handle?;
                Some((m.body, Taken::Pulled { receipt_handle }))
            })
            .collect(),
        Err(err) => {
            tracing::warn!(error = %aws_smithy_types::error::display::DisplayErrorContext(&err), "could not take range tasks off the queue; the streams listing go on");
            Vec::new()
        }
    }
}

/// Delete a pulled task that was handed on. If this fails the task comes
/// back after its visibility timeout, and the lister that takes it finds it
/// handed on and drops it.
async fn delete(env: &FunctionEnv, receipt_handle: &str) {
    let Some(queue) = env.config.range_queue_url.as_deref() else {
        return;
    };
    let deleted = env
        .sqs
        .delete_message()
        .queue_url(queue)
        .receipt_handle(receipt_handle)
        .send()
        .await;
    if let Err(err) = deleted {
        tracing::warn!(error = %aws_smithy_types::error::display::DisplayErrorContext(&err), "could not delete a range task handed on; its next delivery is dropped as a duplicate");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
