//! Every message and record the serverless functions exchange, in one
//! place: what the planner hands the state machine, what a lister sends to
//! the work queue and checkpoints, what a copier writes back, and what the
//! reporter reads and returns. The functions' logic files import these; a
//! change here is a change of the wire format, so the serde names are the
//! contract (`tests/serverless.rs` and `tests/template/` read them).

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::backend::ledger::proven::ChunkInfo;
use crate::base::error::SyncError;
use crate::engine::diff::Action;
use crate::model::entry::ObjectEntry;
use crate::model::location::KeyRange;
use crate::model::options::SyncSpec;
use crate::report::{Counts, ReportRow, RunStatus};

/// The state machine, as deployed: the states the functions' events and
/// results pass through (`statemachine/sync.asl.json`).
pub const STATE_MACHINE: &str = include_str!("../../statemachine/sync.asl.json");

/// Bumped on any change a copier of the previous version could misread.
///
/// Still 1 with the `etag` of a delete task: the field is optional both
/// ways. A copier of before it ignores it (serde skips unknown fields) and
/// deletes as it always did; this copier reads a message written before it
/// with an empty ETag, and still checks the run and the source before
/// deleting, only not the destination's ETag. A new version would instead
/// make every message in flight, and every one waiting in the dead-letter
/// queue, unreadable to the copier after an upgrade: exactly the redriven
/// batches whose deletes these checks are for.
pub const MESSAGE_VERSION: u32 = 1;

/// One unit of copier work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CopyTask {
    /// Absent at the destination.
    Copy {
        #[serde(flatten)]
        object: ObjectEntry,
    },
    /// Present at the destination but different.
    Update {
        #[serde(flatten)]
        object: ObjectEntry,
    },
    /// Only at the destination, with delete on.
    Delete {
        key: String,
        /// The destination object's ETag when it was listed: the delete
        /// happens only while the object still has it. Empty in messages
        /// written before delete tasks carried it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        etag: String,
    },
    /// Some parts of an object too large for one invocation (parts.rs).
    Parts(PartGroup),
    /// `--all-versions`: append what the key's destination history lacks,
    /// oldest first. The copier lists the key's history on both sides
    /// again and aligns them before it appends, so a task delivered twice,
    /// or after the source gained versions, appends only what is missing
    /// then, in order; one task per key, so no two copiers append to one
    /// history at once. A copier from before this task refuses the batch
    /// (an unknown `op`) rather than misreading it.
    History {
        key: String,
        /// What the lister found missing: entries (versions and delete
        /// markers) and their bytes, for the batch's limits.
        #[serde(default)]
        entries: u64,
        #[serde(default)]
        bytes: u64,
    },
}

impl CopyTask {
    /// The task for an action; skips are not tasks.
    pub fn from_action(action: Action) -> Option<Self> {
        match action {
            Action::Copy { source } => Some(CopyTask::Copy { object: source }),
            Action::Update { source, .. } => Some(CopyTask::Update { object: source }),
            Action::Delete { destination } => Some(CopyTask::Delete {
                key: destination.key,
                etag: destination.etag,
            }),
            Action::Skip { .. } => None,
            // The lister settles these before it plans tasks.
            Action::Compare {
                source,
                destination,
            } => Self::from_action(crate::engine::prove::without_checksums(
                source,
                destination,
                true,
            )),
        }
    }

    /// Back to the action the worker applies; part tasks are not actions.
    pub fn into_action(self) -> Option<Action> {
        Some(match self {
            CopyTask::Copy { object } => Action::Copy { source: object },
            CopyTask::Update { object } => Action::Update {
                destination: object.clone(),
                source: object,
            },
            CopyTask::Parts(_) | CopyTask::History { .. } => return None,
            CopyTask::Delete { key, etag } => Action::Delete {
                destination: ObjectEntry {
                    version_id: None,
                    key,
                    size: 0,
                    etag,
                    last_modified_ms: 0,
                    storage_class: None,
                    checksum: None,
                },
            },
        })
    }

    pub fn key(&self) -> &str {
        match self {
            CopyTask::Copy { object } | CopyTask::Update { object } => &object.key,
            CopyTask::Parts(group) => &group.object.key,
            CopyTask::Delete { key, .. } | CopyTask::History { key, .. } => key,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            CopyTask::Copy { object } | CopyTask::Update { object } => object.size,
            CopyTask::Parts(group) => group.object.size,
            CopyTask::Delete { .. } => 0,
            CopyTask::History { bytes, .. } => *bytes,
        }
    }
}

/// The message body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyBatch {
    pub version: u32,
    pub run_id: String,
    pub batch_id: String,
    pub tasks: Vec<CopyTask>,
    /// The write-phase range whose listing sent this batch (or whose batch
    /// split off these parts): its copier counts the range's copies, so
    /// VALIDATE lists the range again as soon as they are all done
    /// ([`crate::serverless::ranges::validate_when_copied`]). `None`: a
    /// replication batch, or one sent before batches named their range
    /// (VALIDATE then waits for the whole write phase, as it always did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<usize>,
}

impl CopyBatch {
    pub fn parse(body: &str) -> Result<Self, SyncError> {
        let batch: CopyBatch = serde_json::from_str(body)
            .map_err(|e| SyncError::Config(format!("not a copy batch: {e}")))?;
        if batch.version != MESSAGE_VERSION {
            return Err(SyncError::Config(format!(
                "copy batch {} has message version {}, this copier reads version {MESSAGE_VERSION}",
                batch.batch_id, batch.version
            )));
        }
        Ok(batch)
    }

    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("a batch serialises")
    }
}

/// What a batch sent was, as recorded in the lister's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentBatch {
    pub id: String,
    pub tasks: u64,
    pub first_key: String,
    pub last_key: String,
}

impl From<&CopyBatch> for SentBatch {
    fn from(batch: &CopyBatch) -> Self {
        SentBatch {
            id: batch.batch_id.clone(),
            tasks: batch.tasks.len() as u64,
            first_key: batch
                .tasks
                .first()
                .map(|t| t.key().to_owned())
                .unwrap_or_default(),
            last_key: batch
                .tasks
                .last()
                .map(|t| t.key().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// `parts/UPLOAD/upload.json`: the upload, as the copy that started it
/// left it.
pub use crate::backend::s3::multipart::Upload as SavedUpload;

/// One part-range task: the parts `first_part..=last_part` of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartGroup {
    #[serde(flatten)]
    pub object: ObjectEntry,
    pub update: bool,
    /// Names the upload's folder: `{batch}-p{task}`.
    pub upload: String,
    pub upload_id: String,
    pub group: u32,
    pub groups: u32,
    pub first_part: u32,
    pub last_part: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Write,
    Validate,
}

impl Phase {
    /// Its name on the wire and in the run counters.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Write => "write",
            Phase::Validate => "validate",
        }
    }

    pub fn folder(self) -> &'static str {
        match self {
            Phase::Write => "sent",
            Phase::Validate => "validate",
        }
    }
}

/// A range task, the body of a message on the range queue: where a shard's
/// listing stands. The lister that takes it lists on from `cursor` until
/// its deadline, then sends what it returns (`seq` + 1) back to the queue,
/// until `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCursor {
    pub run_id: String,
    pub phase: Phase,
    pub shard: usize,
    /// The invocation number within the shard.
    #[serde(default)]
    pub seq: u32,
    /// The last key handled (relative), or none yet.
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub done: bool,
    /// Chunks of proofs the shard's earlier invocations wrote (the ledger
    /// of proven pairs), so a shard that wrote none reads no checkpoint
    /// back to name them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub proven_chunks: u32,
    /// Batches the shard's earlier invocations of this phase sent: a shard
    /// whose write phase sent none has nothing for VALIDATE to check.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub batches_sent: u64,
    /// The range's keys, when they are not the manifest's shard `shard`: a
    /// range split off another while it was listed, or one whose end a
    /// split moved down. `shard` is then its number, past the manifest's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<KeyRange>,
}

/// A range an invocation split off the end of its own while listing it,
/// and handed to other listers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRange {
    pub shard: usize,
    pub range: KeyRange,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// `proven/SHARD.json`: what a shard's write phase leaves its VALIDATE,
/// written by its last invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardWritten {
    /// Batches (copies, deletes) the shard's write phase sent. None: the
    /// destination was not written to in this shard, so VALIDATE does not
    /// list it again.
    pub batches_sent: u64,
    /// The chunks of pairs the write phase proved (ledger hits, checksum
    /// comparisons), for VALIDATE to read beside the committed ledger.
    #[serde(default)]
    pub chunks: Vec<ChunkInfo>,
}

/// One invocation's checkpoint, rewritten after every page.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub shard: usize,
    pub seq: u32,
    pub cursor: Option<String>,
    pub done: bool,
    pub counts: Counts,
    /// Write phase: every batch this invocation sent.
    pub batches: Vec<SentBatch>,
    /// Report rows (unverified pairs; VALIDATE mismatches), all of this
    /// invocation's; bounded by its key budget.
    pub rows: Vec<ReportRow>,
    /// The chunks of the next ledger of proven pairs this invocation wrote
    /// (by the run's last listing pass only), in key order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proven: Vec<ChunkInfo>,
    /// The invocation stopped on purpose (done, or its deadline or key
    /// budget): a retry of it lists nothing more, and hands on this
    /// checkpoint's cursor. Without it, a retry resumes from the cursor.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// What came after was sent: the range task for the next invocation,
    /// or the range counted done. A range task found here again is a
    /// duplicate delivery, and is dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handed_on: bool,
    /// The range this invocation lists: the task's, its end moved down by
    /// each split. Missing from checkpoints written before splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<KeyRange>,
    /// The ranges split off it, recorded here before they are counted and
    /// sent, so a retry sends them again rather than listing their keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<SplitRange>,
    /// When the invocation started this checkpoint, and when it last wrote
    /// it, in milliseconds since the Unix epoch: the report's phase timings.
    /// Missing from checkpoints written before they were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<i64>,
}

/// One batch's outcome, at `results/BATCH.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResult {
    pub run_id: String,
    pub batch_id: String,
    /// Which receive of the message wrote it.
    pub receive_count: u32,
    pub counts: Counts,
    pub rows: Vec<ReportRow>,
    /// When the delivery that wrote it started and finished the batch, in
    /// milliseconds since the Unix epoch: the report's timeline and copy
    /// phase. Missing from results written before they were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
}

impl BatchResult {
    /// A delivery that copied nothing of `batch` (an earlier one did).
    pub fn nothing(batch: &CopyBatch, receive_count: u32) -> Self {
        BatchResult {
            run_id: batch.run_id.clone(),
            batch_id: batch.batch_id.clone(),
            receive_count,
            counts: Counts::default(),
            rows: Vec::new(),
            started_at_ms: None,
            finished_at_ms: None,
        }
    }
}

/// What the planner writes to `run.json`: everything later steps need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunManifest {
    pub version: u32,
    pub run_id: String,
    /// The resolved options: stack defaults filled in, endpoints the stack's.
    pub spec: SyncSpec,
    pub settings: RunSettings,
    pub shards: Vec<KeyRange>,
    pub created_at: String,
    /// The replicator's journal, folded in at planning: chunks the listers
    /// read beside the committed ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalFold>,
}

/// The replicator's journal objects a run folded in
/// ([`crate::backend::ledger::journal`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalFold {
    /// Sorted and apart; in the ledger's store, named by no manifest.
    pub chunks: Vec<ChunkInfo>,
    /// The last journal object folded: the next ledger's manifest names it.
    pub through: String,
}

impl RunManifest {
    pub const KEY: &'static str = "run.json";
    pub const VERSION: u32 = 1;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannerEvent {
    /// The execution's name: runs are named by their id.
    pub run_id: String,
    /// The execution input, as the user gave it.
    pub input: Value,
}

/// What the state machine carries through the run: small on purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub run_id: String,
    /// Shard numbers, each sent to the range queue as its first task.
    pub shards: Vec<usize>,
    pub shard_concurrency: u32,
    pub validate: bool,
    pub run_url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub run_id: String,
    /// The listing pass waited for: its ranges, then the copies they sent.
    #[serde(default)]
    pub phase: Phase,
    /// Ranges of that pass sent to the range queue, and listed to their end.
    #[serde(default)]
    pub ranges_sent: u64,
    #[serde(default)]
    pub ranges_done: u64,
    pub batches_sent: u64,
    pub batches_done: u64,
    pub tasks_sent: u64,
    /// Every range is listed and every batch has a result, or waiting
    /// longer cannot help.
    pub complete: bool,
    pub idle_polls: u32,
    pub polls: u32,
    /// How long the state machine waits before asking again
    /// ([`crate::model::polling`]): short at first, then a twentieth of
    /// the time waited, so a long run's history grows with the logarithm
    /// of its length, far below a Standard workflow's 25,000 events.
    pub wait_seconds: u64,
    /// Seconds the pass has waited between polls, this wait included.
    #[serde(default)]
    pub waited_secs: u64,
    /// The run is stopped (cancelled, or failing fast): once `complete`
    /// (every range and batch settled, most of them dropped), the state
    /// machine goes straight to the report. Always present, as the state
    /// machine reads it.
    #[serde(default)]
    pub stopped: bool,
    /// Polls since the run was seen stopped (their waits grow again).
    #[serde(default)]
    pub stopped_polls: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcome {
    pub run_id: String,
    pub status: RunStatus,
    pub exit_code: i32,
    pub failed: u64,
    pub failure_threshold: u64,
    /// More failures than the threshold allows: the execution fails.
    pub over_threshold: bool,
    /// Why the run was stopped before its end: `cancelled`,
    /// `failure_threshold`, or empty. The state machine ends a stopped
    /// run as `Cancelled` or `Stopped` on it.
    #[serde(default)]
    pub stop: String,
    /// The stop in words (the `Stopped` and `Cancelled` causes), or empty.
    #[serde(default)]
    pub stop_reason: String,
    pub summary_json: String,
    pub failures_csv: String,
    pub counts: Counts,
}

/// Run-level fields of the execution input, besides the sync options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// Failed objects a run may have and still succeed.
    pub failure_threshold: u64,
    /// Shards the planner aims for: 4 per lister the stack runs at once
    /// (the range queue's mapping caps them at `ListingConcurrency`).
    pub shard_concurrency: u32,
    /// At most this many shards (the plan travels in the execution's
    /// state, which is limited to 256 KiB).
    pub max_shards: u32,
    /// Run the VALIDATE phase (re-list and re-diff every shard).
    pub validate: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            failure_threshold: 0,
            shard_concurrency: 16,
            max_shards: 256,
            validate: true,
        }
    }
}
