//! The SQS event source mapping, emulated: poll a queue, invoke a handler
//! (the copier on the work queue, the lister on the range queue, the
//! replicator on the event queue) with a
//! batch of messages, delete the ones it did not hand back. Like the AWS
//! service, it honours the batch size, the queue's visibility timeout (a
//! handed-back message reappears when it expires), partial batch responses,
//! and `maxReceiveCount` (the queue's redrive policy, which moto applies,
//! moves a message to the dead-letter queue).
//!
//! It can also lose copier invocations on purpose ([`CopierCrashes`]), the
//! way Lambda loses one whose process dies, so tests can prove that a crash
//! mid-batch converges and that a batch that never survives ends in the
//! dead-letter queue and in the run's report.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use lambda_runtime::LambdaEvent;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::report::emf;
use crate::serverless::contract::CopyBatch;
use crate::serverless::replicator::Replicator;
use crate::serverless::{FunctionEnv, copier, lister};

use super::router;

/// The function a mapping feeds.
#[derive(Clone)]
pub enum Target {
    /// The copier, and the switch that kills its invocations.
    Copier {
        env: Arc<FunctionEnv>,
        crashes: CopierCrashes,
    },
    /// The lister, on the range queue.
    Lister(Arc<FunctionEnv>),
    Replicator(Arc<Replicator>),
}

#[derive(Debug, Clone)]
pub struct EventSourceOptions {
    pub queue_url: String,
    pub queue_arn: String,
    /// Messages per invocation (the mapping's BatchSize).
    pub batch_size: i32,
    /// Invocations at once (the mapping's MaximumConcurrency).
    pub max_concurrency: usize,
    /// The function's time limit, for its deadline.
    pub function_timeout: Duration,
    /// Deliver every batch twice, as SQS's at-least-once delivery may.
    pub duplicate_deliveries: bool,
}

/// Fault injection: copier invocations that die the way a Lambda does when
/// its process is killed (out of memory, a crash in native code, the time
/// limit, the host going away).
///
/// What AWS does then, and what this does: the invocation's work stops
/// wherever it is (its future is dropped, so requests in flight are
/// abandoned; the ones S3 already received still take effect, which the
/// test stack's fault proxy reproduces by carrying them through to moto),
/// it returns no batch response, and the mapping deletes none of its
/// messages. They reappear when the visibility timeout expires, and after
/// `maxReceiveCount` receives moto's redrive policy moves them to the
/// dead-letter queue.
///
/// This lives in the emulated Lambda service, not in the copier: a real
/// crash gives the function no chance to react, so the copier's code must
/// run exactly as in production up to the instant it is dropped, and a
/// test that needed a hook inside it would prove less than it claims.
///
/// Cheap to clone; every clone controls the same mapping.
#[derive(Clone, Default)]
pub struct CopierCrashes {
    state: Arc<Mutex<CrashState>>,
}

#[derive(Default)]
struct CrashState {
    next_id: u64,
    running: HashMap<u64, Running>,
    /// Keys whose batches never survive an invocation.
    doomed_keys: HashSet<String>,
    killed: Vec<KilledBatch>,
    /// (run id, batch id) of every batch whose invocation returned alive,
    /// once per such delivery.
    survived: Vec<(String, String)>,
}

/// An invocation that can still be killed: its function has not returned.
struct Running {
    kill: CancellationToken,
    batches: Vec<KilledBatch>,
}

/// A batch whose invocation was killed, as its message named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KilledBatch {
    pub run_id: String,
    pub batch_id: String,
    /// The tasks' keys (relative to the run's source).
    pub keys: Vec<String>,
}

impl CopierCrashes {
    /// Kill every copier invocation whose function is running right now;
    /// returns how many. One whose function has already returned is past
    /// the point a crash could lose its batch: its response stands.
    pub fn kill_running_copiers(&self) -> usize {
        let mut state = self.lock();
        let running: Vec<Running> = state.running.drain().map(|(_, r)| r).collect();
        for invocation in &running {
            invocation.kill.cancel();
            state.killed.extend(invocation.batches.iter().cloned());
        }
        tracing::warn!(
            invocations = running.len(),
            "fault injection: killed every running copier invocation"
        );
        running.len()
    }

    /// From now on, every copier invocation whose batch holds a task for
    /// `key` dies as soon as it is invoked, before any request: a message
    /// that crashes its function on every delivery. Its batch can never
    /// write a result, and ends in the dead-letter queue.
    pub fn always_kill_batches_with_key(&self, key: &str) {
        self.lock().doomed_keys.insert(key.to_owned());
    }

    /// Every batch lost to a kill so far, once per killed delivery.
    pub fn killed_batches(&self) -> Vec<KilledBatch> {
        self.lock().killed.clone()
    }

    /// Deliveries of a batch whose invocation returned alive: a killed
    /// batch with one was redelivered and settled. (Its result may still be
    /// the killed delivery's, counted before the kill: that counts once.)
    pub fn survived_deliveries(&self, run_id: &str, batch_id: &str) -> usize {
        let state = self.lock();
        state
            .survived
            .iter()
            .filter(|(run, batch)| run == run_id && batch == batch_id)
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, CrashState> {
        // A panic elsewhere leaves the registry usable: it is plain data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register an invocation of `records` before it starts.
    fn invocation(&self, records: &[SqsMessage]) -> Invocation {
        let batches: Vec<KilledBatch> = records
            .iter()
            .filter_map(|r| CopyBatch::parse(r.body.as_deref()?).ok())
            .map(|batch| KilledBatch {
                keys: batch.tasks.iter().map(|t| t.key().to_owned()).collect(),
                run_id: batch.run_id,
                batch_id: batch.batch_id,
            })
            .collect();
        let kill = CancellationToken::new();
        let mut state = self.lock();
        let doomed = batches
            .iter()
            .any(|b| b.keys.iter().any(|k| state.doomed_keys.contains(k)));
        if doomed {
            tracing::warn!(
                batches = ?batches.iter().map(|b| &b.batch_id).collect::<Vec<_>>(),
                "fault injection: killing a copier invocation as it starts"
            );
            kill.cancel();
            state.killed.extend(batches);
            return Invocation {
                registered: None,
                kill,
            };
        }
        let id = state.next_id;
        state.next_id += 1;
        state.running.insert(
            id,
            Running {
                kill: kill.clone(),
                batches,
            },
        );
        Invocation {
            registered: Some((self.clone(), id)),
            kill,
        }
    }
}

/// One invocation, as the crash switch knows it.
struct Invocation {
    /// Where it is registered while it can be killed; `None` for a
    /// replicator's (never killed) or one killed before it started.
    registered: Option<(CopierCrashes, u64)>,
    kill: CancellationToken,
}

impl Invocation {
    fn immortal() -> Self {
        Invocation {
            registered: None,
            kill: CancellationToken::new(),
        }
    }

    /// The function returned: whether it did so alive. Leaving the registry
    /// and being killed exclude each other under its lock, so a kill that
    /// counted this invocation always costs it its response.
    fn returned_alive(&mut self) -> bool {
        match self.registered.take() {
            Some((crashes, id)) => {
                let mut state = crashes.lock();
                let Some(running) = state.running.remove(&id) else {
                    return false;
                };
                let survived = running.batches.into_iter().map(|b| (b.run_id, b.batch_id));
                state.survived.extend(survived);
                true
            }
            None => !self.kill.is_cancelled(),
        }
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        if let Some((crashes, id)) = self.registered.take() {
            crashes.lock().running.remove(&id);
        }
    }
}

pub async fn run(
    sqs: aws_sdk_sqs::Client,
    target: Target,
    options: EventSourceOptions,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(options.max_concurrency.max(1)));
    while !cancel.is_cancelled() {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            received = sqs
                .receive_message()
                .queue_url(&options.queue_url)
                .max_number_of_messages(options.batch_size.clamp(1, 10))
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send() => received,
        };
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %crate::base::error::classify(&err).message, "event source: receive failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<SqsMessage> = messages
            .into_iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.attributes = m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect::<HashMap<_, _>>();
                record.message_id = m.message_id;
                record.receipt_handle = m.receipt_handle;
                record.body = m.body;
                record.event_source = Some("aws:sqs".into());
                record.event_source_arn = Some(options.queue_arn.clone());
                record
            })
            .collect();
        // Registered before it is spawned, so a kill from now on finds it.
        let invocation = match &target {
            Target::Copier { crashes, .. } => crashes.invocation(&records),
            Target::Lister(_) | Target::Replicator(_) => Invocation::immortal(),
        };
        let (sqs, target, options) = (sqs.clone(), target.clone(), options.clone());
        tokio::spawn(async move {
            let _permit = permit;
            invoke(&sqs, &target, &options, records, invocation).await;
        });
    }
}

async fn invoke(
    sqs: &aws_sdk_sqs::Client,
    target: &Target,
    options: &EventSourceOptions,
    records: Vec<SqsMessage>,
    mut invocation: Invocation,
) {
    // `biased`: a kill that has happened wins over a response that is ready,
    // and an invocation killed before it starts never sends a request.
    // Losing the race drops the function's future where it stands.
    let response = tokio::select! {
        biased;
        _ = invocation.kill.cancelled() => None,
        response = call(target, options, &records) => Some(response),
    };
    let Some(response) = response.filter(|_| invocation.returned_alive()) else {
        // No response and no deletes: every message of the batch reappears
        // after the visibility timeout, as after a real crash.
        tracing::warn!(
            messages = records.len(),
            "event source: the invocation was killed; its messages stay on the queue"
        );
        return;
    };
    let handed_back: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    for record in &records {
        if handed_back.contains(&record.message_id.as_deref().unwrap_or_default()) {
            continue; // reappears after the visibility timeout
        }
        if let Some(handle) = &record.receipt_handle
            && let Err(err) = sqs
                .delete_message()
                .queue_url(&options.queue_url)
                .receipt_handle(handle)
                .send()
                .await
        {
            tracing::warn!(error = %crate::base::error::classify(&err).message, "event source: delete failed");
        }
    }
}

/// Run the function on the batch (twice with duplicate deliveries); the
/// last delivery's response is the one the mapping acts on. The copier is
/// invoked through its Lambda handler, with a context, as on Lambda, so it
/// reports its metrics as there.
async fn call(
    target: &Target,
    options: &EventSourceOptions,
    records: &[SqsMessage],
) -> SqsBatchResponse {
    let deliveries = if options.duplicate_deliveries { 2 } else { 1 };
    let mut response = SqsBatchResponse::default();
    for _ in 0..deliveries {
        response = match target {
            Target::Copier { env, .. } => {
                let mut event = SqsEvent::default();
                event.records = records.to_vec();
                let name = function_name(&options.queue_arn, "-work", "copier");
                let context = router::context(&name, options.function_timeout);
                match copier::handle(LambdaEvent::new(event, context), env).await {
                    Ok(response) => response,
                    // It never fails as a whole; if it did, Lambda would
                    // retry every message.
                    Err(_) => hand_back_all(records),
                }
            }
            Target::Lister(env) => {
                let mut event = SqsEvent::default();
                event.records = records.to_vec();
                let name = function_name(&options.queue_arn, "-ranges", "lister");
                let context = router::context(&name, options.function_timeout);
                match lister::handle(LambdaEvent::new(event, context), env).await {
                    Ok(response) => response,
                    Err(_) => hand_back_all(records),
                }
            }
            Target::Replicator(replicator) => {
                let deadline = std::time::SystemTime::now() + options.function_timeout;
                let invocation = replicator.replicate(records.to_vec(), deadline).await;
                emf::write_lines(&invocation.metric_lines);
                invocation.response
            }
        };
    }
    response
}

/// The name of the function a queue feeds: the local stack names its
/// queues `<stack><suffix>` (`-work`, `-ranges`) and its functions
/// `<stack>-<function>`.
fn function_name(queue_arn: &str, suffix: &str, function: &str) -> String {
    let queue = queue_arn.rsplit(':').next().unwrap_or_default();
    let stack = queue.strip_suffix(suffix).unwrap_or("s3-fanout");
    format!("{stack}-{function}")
}

fn hand_back_all(records: &[SqsMessage]) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in records {
        let mut failure = aws_lambda_events::event::sqs::BatchItemFailure::default();
        failure.item_identifier = record.message_id.clone().unwrap_or_default();
        response.batch_item_failures.push(failure);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_named_after_the_stack_of_their_queue() {
        let name = |arn, suffix, function| function_name(arn, suffix, function);
        assert_eq!(
            name(
                "arn:aws:sqs:us-east-1:123456789012:nightly-work",
                "-work",
                "copier"
            ),
            "nightly-copier"
        );
        assert_eq!(
            name(
                "arn:aws:sqs:us-east-1:123456789012:nightly-ranges",
                "-ranges",
                "lister"
            ),
            "nightly-lister"
        );
        assert_eq!(name("unexpected", "-work", "copier"), "s3-fanout-copier");
    }
}
