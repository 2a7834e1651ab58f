//! What a function knows from its environment (set by `infra/template.yaml`,
//! or by the local stack), and the clients it builds once per container.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::s3::copier::Copier;
use crate::base::client::{
    ClientSettings, RetryMode, build_dynamodb_client, build_s3_client, build_sqs_client,
};
use crate::base::error::SyncError;
use crate::model::options::{ClientFlags, DiffMode, SyncOptions, SyncSpec};
use crate::serverless::contract::RunManifest;
use crate::serverless::counters::RunCounters;
use crate::serverless::store::RunStore;

/// Keys a lister invocation handles at most, unless the stack says otherwise.
pub const DEFAULT_LISTER_MAX_KEYS: u64 = 2_000_000;

/// Range tasks a lister invocation lists at once, unless the stack says
/// otherwise. Listing is bound by round trips, not CPU (a page costs a
/// lister well under a millisecond of it), so streams share a billed
/// second: see the README's scale section.
pub const DEFAULT_LISTER_STREAMS: u64 = 8;

/// A lister writes a checkpoint at least this often, however slowly its
/// keys come (a page of pairs proven by HEADs).
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// The stack's configuration, one environment variable each.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The buckets this stack was deployed for (its IAM policies name them):
    /// the defaults of an execution input, and the only buckets it may name.
    pub source: Option<String>,
    pub destination: Option<String>,
    pub mode: Option<DiffMode>,
    /// Whether the copier's role may delete (the `AllowDelete` parameter).
    pub allow_delete: bool,
    pub report_bucket: String,
    pub report_prefix: String,
    pub queue_url: Option<String>,
    /// The range queue (`S3_FANOUT_RANGE_QUEUE_URL`): the planner sends
    /// each shard's first range task there, listers their next ones.
    pub range_queue_url: Option<String>,
    /// The DynamoDB table of run counters (`S3_FANOUT_RUN_TABLE`): the
    /// lister, copier and reporter count batches there.
    pub run_table: Option<String>,
    /// The work queue's `maxReceiveCount`: on that receive, the copier
    /// records failures instead of handing the batch back.
    pub max_receive_count: u32,
    /// Tasks of one batch copied at once inside one invocation.
    pub copy_concurrency: usize,
    /// Keys one lister invocation handles at most before it returns its
    /// cursor (besides its deadline): bounds the work a crash repeats.
    pub lister_max_keys: u64,
    /// Keys between a lister's looks at its deadline and checkpoint
    /// (`S3_FANOUT_LISTER_PAGE_KEYS`, default 1,000: one listing page).
    pub lister_page_keys: u64,
    /// Keys a lister handles between two checkpoints at most
    /// (`S3_FANOUT_CHECKPOINT_KEYS`, default 10,000: ten listing pages),
    /// besides one every [`CHECKPOINT_INTERVAL`]: what a crash repeats.
    pub checkpoint_keys: u64,
    /// Range tasks one lister invocation lists at once
    /// (`S3_FANOUT_LISTER_STREAMS`, the template's `ListerStreams`, which
    /// is also its event source's BatchSize): a stream a side each.
    pub lister_streams: usize,
    /// How old a replicator's journal object must be before a run folds it
    /// in (`S3_FANOUT_JOURNAL_SETTLE_SECONDS`, default 300): an invocation
    /// still writing its object is folded by the next run, not skipped.
    pub journal_settle_ms: u64,
    /// Objects above this size are copied as several part-range tasks, each
    /// its own invocation, instead of inside one: an invocation has 15
    /// minutes, and UploadPartCopy moves a few hundred MB/s per object.
    pub split_object_bytes: u64,
    /// The stack's include/exclude globs: the defaults of every full sync and
    /// the replicator's filter, so both apply the same rules.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Whether the replicator deletes a destination object whose source is
    /// gone (the `ReplicateDeletes` parameter; its role may delete only then).
    pub replicate_deletes: bool,
    /// Whether the replicator appends each key's new versions and delete
    /// markers to its history at the destination (the
    /// `ReplicateAllVersions` parameter), as `sync --all-versions` does.
    pub replicate_all_versions: bool,
    /// Where the replicator sends events that no retry can fix.
    pub dead_letter_queue_url: Option<String>,
    /// How every copy of this stack is encrypted, when the stack fixes it
    /// (`S3_FANOUT_SSE`, `S3_FANOUT_SSE_KMS_KEY_ID`; the template sets them
    /// from DestinationKmsKeyArn, the one key its roles may encrypt with).
    /// Runs and the replicator take it; an execution input may not change it.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub client: ClientSettings,
}

impl StackConfig {
    /// Read the configuration through `var` (the process environment, or a
    /// map in tests and the local stack).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SyncError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: u64| -> Result<u64, SyncError> {
            var(name).map_or(Ok(default), |v| {
                v.trim().parse().map_err(|_| {
                    SyncError::Config(format!("{name} must be a whole number, got {v:?}"))
                })
            })
        };
        let mode = var("S3_FANOUT_MODE")
            .map(|m| {
                <DiffMode as clap::ValueEnum>::from_str(&m, true).map_err(|_| {
                    SyncError::Config(format!(
                        "S3_FANOUT_MODE must be missing, size, mtime or etag, got {m:?}"
                    ))
                })
            })
            .transpose()?;
        let report_bucket = var("S3_FANOUT_REPORT_BUCKET").ok_or_else(|| {
            SyncError::Config(
                "S3_FANOUT_REPORT_BUCKET is not set: the run's state and report go there".into(),
            )
        })?;
        let mut report_prefix = var("S3_FANOUT_REPORT_PREFIX").unwrap_or_default();
        if !report_prefix.is_empty() && !report_prefix.ends_with('/') {
            report_prefix.push('/');
        }
        // Functions retry in standard mode: adaptive mode's limiter is per
        // process, so it cannot pace a fleet of Lambdas (the event source
        // mapping's MaximumConcurrency does), and its slow refill would eat
        // an invocation's time limit.
        let flags = ClientFlags {
            endpoint_url: var("S3_FANOUT_ENDPOINT_URL"),
            region: var("S3_FANOUT_REGION").or_else(|| var("AWS_REGION")),
            retry_mode: RetryMode::Standard,
            max_attempts: number("S3_FANOUT_MAX_ATTEMPTS", 10)?.max(1) as u32,
            ..ClientFlags::default()
        };
        // JSON arrays, not comma lists: a glob may hold a comma (`{a,b}`).
        let globs = |name: &str| -> Result<Vec<String>, SyncError> {
            var(name).map_or(Ok(Vec::new()), |v| {
                serde_json::from_str(&v).map_err(|_| {
                    SyncError::Config(format!(
                        "{name} must be a JSON array of glob strings such as [\"*.tmp\"], got {v:?}"
                    ))
                })
            })
        };
        let (sse, sse_kms_key_id) = (var("S3_FANOUT_SSE"), var("S3_FANOUT_SSE_KMS_KEY_ID"));
        if let Some(other) = sse
            .as_deref()
            .filter(|s| !matches!(*s, "AES256" | "aws:kms"))
        {
            return Err(SyncError::Config(format!(
                "S3_FANOUT_SSE must be AES256 or aws:kms, got {other:?}"
            )));
        }
        if sse_kms_key_id.is_some() && sse.as_deref() != Some("aws:kms") {
            return Err(SyncError::Config(
                "S3_FANOUT_SSE_KMS_KEY_ID needs S3_FANOUT_SSE=aws:kms".into(),
            ));
        }
        Ok(StackConfig {
            source: var("S3_FANOUT_SOURCE"),
            destination: var("S3_FANOUT_DESTINATION"),
            mode,
            allow_delete: var("S3_FANOUT_ALLOW_DELETE").is_some_and(|v| v == "true"),
            report_bucket,
            report_prefix,
            queue_url: var("S3_FANOUT_WORK_QUEUE_URL"),
            range_queue_url: var("S3_FANOUT_RANGE_QUEUE_URL"),
            run_table: var("S3_FANOUT_RUN_TABLE").filter(|t| !t.is_empty()),
            max_receive_count: number("S3_FANOUT_MAX_RECEIVE_COUNT", 5)?.max(1) as u32,
            copy_concurrency: number("S3_FANOUT_COPY_CONCURRENCY", 16)?.max(1) as usize,
            lister_max_keys: number("S3_FANOUT_LISTER_MAX_KEYS", DEFAULT_LISTER_MAX_KEYS)?.max(1),
            lister_page_keys: number("S3_FANOUT_LISTER_PAGE_KEYS", 1_000)?.max(1),
            checkpoint_keys: number("S3_FANOUT_CHECKPOINT_KEYS", 10_000)?.max(1),
            lister_streams: number("S3_FANOUT_LISTER_STREAMS", DEFAULT_LISTER_STREAMS)?.clamp(1, 10)
                as usize,
            journal_settle_ms: number("S3_FANOUT_JOURNAL_SETTLE_SECONDS", 300)?
                .saturating_mul(1000),
            split_object_bytes: var("S3_FANOUT_SPLIT_OBJECT_BYTES")
                .map(|v| crate::model::options::parse_size(&v, "S3_FANOUT_SPLIT_OBJECT_BYTES"))
                .transpose()?
                .unwrap_or(64 * 1024 * 1024 * 1024)
                .max(crate::model::s3_shape::MIN_PART_SIZE),
            include: globs("S3_FANOUT_INCLUDE")?,
            exclude: globs("S3_FANOUT_EXCLUDE")?,
            replicate_deletes: var("S3_FANOUT_REPLICATE_DELETES").is_some_and(|v| v == "true"),
            replicate_all_versions: var("S3_FANOUT_REPLICATE_ALL_VERSIONS")
                .is_some_and(|v| v == "true"),
            dead_letter_queue_url: var("S3_FANOUT_DEAD_LETTER_QUEUE_URL"),
            sse,
            sse_kms_key_id,
            client: flags.settings(None, None),
        })
    }

    /// The stack decides how functions reach S3, whatever a spec says.
    pub fn apply_client(&self, spec: &mut SyncSpec) {
        spec.client.endpoint_url = self.client.endpoint_url.clone();
        spec.client.region = self.client.region.clone();
        spec.client.retry_mode = self.client.retry_mode;
        spec.client.max_attempts = self.client.max_attempts;
        spec.client.path_style = self.client.force_path_style;
    }

    /// The stack's encryption, when it fixes one, whatever a spec says:
    /// the copier's role may encrypt with that key and no other.
    pub fn apply_encryption(&self, spec: &mut SyncSpec) {
        if self.sse.is_some() {
            spec.sse = self.sse.clone();
            spec.sse_kms_key_id = self.sse_kms_key_id.clone();
        }
    }

    pub fn range_queue_url(&self) -> Result<&str, SyncError> {
        self.range_queue_url.as_deref().ok_or_else(|| {
            SyncError::Config("S3_FANOUT_RANGE_QUEUE_URL is not set for this function".into())
        })
    }

    pub fn queue_url(&self) -> Result<&str, SyncError> {
        self.queue_url.as_deref().ok_or_else(|| {
            SyncError::Config("S3_FANOUT_WORK_QUEUE_URL is not set for this function".into())
        })
    }
}

/// A run's validated options and the clients that reach its buckets.
pub struct RunContext {
    pub manifest: RunManifest,
    pub options: SyncOptions,
    pub copier: Arc<Copier>,
}

/// Built once per Lambda container (or once by the local stack) and shared
/// by every invocation: clients are expensive, runs are cached by id.
pub struct FunctionEnv {
    pub config: StackConfig,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub store: RunStore,
    counters: Option<RunCounters>,
    runs: Mutex<HashMap<String, Arc<RunContext>>>,
}

impl FunctionEnv {
    pub async fn from_environment() -> Result<Self, SyncError> {
        let config = StackConfig::from_vars(|name| std::env::var(name).ok())?;
        Ok(Self::new(config).await)
    }

    pub async fn new(config: StackConfig) -> Self {
        let s3 = build_s3_client(&config.client, None).await;
        let sqs = build_sqs_client(&config.client).await;
        let counters = match &config.run_table {
            Some(table) => Some(RunCounters::new(
                build_dynamodb_client(&config.client).await,
                table.clone(),
            )),
            None => None,
        };
        let store = RunStore::new(
            s3.clone(),
            config.report_bucket.clone(),
            config.report_prefix.clone(),
        );
        FunctionEnv {
            config,
            s3,
            sqs,
            store,
            counters,
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// The run counters, for the functions that count batches.
    pub fn counters(&self) -> Result<&RunCounters, SyncError> {
        self.counters.as_ref().ok_or_else(|| {
            SyncError::Config("S3_FANOUT_RUN_TABLE is not set for this function".into())
        })
    }

    /// Clients for a run's two sides: this container's own client where the
    /// settings are the same (they are, unless a side names another region).
    /// Errors only for a run that is not bucket to bucket.
    pub async fn copier_for(&self, options: &SyncOptions) -> Result<Copier, SyncError> {
        let (source, destination) = options.buckets()?;
        let client = |settings: &ClientSettings| {
            let settings = settings.clone();
            let shared = self.s3.clone();
            let same = settings == self.config.client;
            async move {
                if same {
                    shared
                } else {
                    build_s3_client(&settings, None).await
                }
            }
        };
        Ok(Copier {
            source_client: client(&options.source_client).await,
            destination_client: client(&options.destination_client).await,
            source: source.clone(),
            destination: destination.clone(),
            options: options.copy.clone(),
        })
    }

    /// The run `run_id`, as the planner recorded it.
    pub async fn run(&self, run_id: &str) -> Result<Arc<RunContext>, SyncError> {
        if let Some(run) = self.runs.lock().expect("poisoned").get(run_id) {
            return Ok(run.clone());
        }
        let manifest: RunManifest = self
            .store
            .get_json(run_id, RunManifest::KEY)
            .await?
            .ok_or_else(|| {
                SyncError::Config(format!(
                    "run {run_id:?} has no {} in {}: was it planned by this stack?",
                    RunManifest::KEY,
                    self.store.run_url(run_id)
                ))
            })?;
        let options = SyncOptions::try_from(manifest.spec.clone())?;
        let copier = Arc::new(self.copier_for(&options).await?);
        let run = Arc::new(RunContext {
            manifest,
            options,
            copier,
        });
        let mut runs = self.runs.lock().expect("poisoned");
        // A warm container serves run after run; keep only a few.
        if runs.len() >= 8 {
            runs.clear();
        }
        runs.insert(run_id.to_owned(), run.clone());
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<StackConfig, SyncError> {
        StackConfig::from_vars(|name| {
            vars.iter()
                .chain(&[("S3_FANOUT_REPORT_BUCKET", "reports")])
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn the_stacks_encryption_is_an_algorithm_s3_knows_with_a_key_only_for_kms() {
        let key = "arn:aws:kms:us-east-1:111122223333:key/k";
        let kms = config(&[
            ("S3_FANOUT_SSE", "aws:kms"),
            ("S3_FANOUT_SSE_KMS_KEY_ID", key),
        ])
        .unwrap();
        assert_eq!(
            (kms.sse.as_deref(), kms.sse_kms_key_id.as_deref()),
            (Some("aws:kms"), Some(key))
        );
        // The template sets both from DestinationKmsKeyArn: empty is unset.
        let none = config(&[("S3_FANOUT_SSE", ""), ("S3_FANOUT_SSE_KMS_KEY_ID", "")]).unwrap();
        assert_eq!((none.sse, none.sse_kms_key_id), (None, None));
        for (vars, why) in [
            (vec![("S3_FANOUT_SSE", "aws:kms:dsse")], "AES256 or aws:kms"),
            (
                vec![("S3_FANOUT_SSE_KMS_KEY_ID", key)],
                "needs S3_FANOUT_SSE=aws:kms",
            ),
            (
                vec![
                    ("S3_FANOUT_SSE", "AES256"),
                    ("S3_FANOUT_SSE_KMS_KEY_ID", key),
                ],
                "needs S3_FANOUT_SSE=aws:kms",
            ),
        ] {
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.contains(why), "{vars:?}: {err}");
        }
    }

    #[test]
    fn a_fixed_encryption_overrides_a_spec_and_none_leaves_it() {
        let mut spec = SyncSpec {
            sse: Some("AES256".into()),
            ..SyncSpec::default()
        };
        config(&[]).unwrap().apply_encryption(&mut spec);
        assert_eq!(spec.sse.as_deref(), Some("AES256"));
        config(&[("S3_FANOUT_SSE", "aws:kms")])
            .unwrap()
            .apply_encryption(&mut spec);
        assert_eq!(
            (spec.sse.as_deref(), spec.sse_kms_key_id),
            (Some("aws:kms"), None)
        );
    }
}
