//! Parse, then validate: [`SyncSpec`] is what a user (CLI flags) or an event
//! (JSON, in the Lambda runtime) asks for; [`SyncOptions`] is the validated
//! configuration every stage reads. [`SyncOptions::try_from`] is the only
//! place a spec becomes options, with one small check per conflict.

use std::time::Duration;

use aws_sdk_s3::types::StorageClass;
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde::{Deserialize, Serialize};

use crate::base::client::{ClientSettings, RetryMode};
use crate::base::error::SyncError;

use crate::model::filter::KeyFilter;
use crate::model::location::{KeyRange, Location, ReportLocation, S3Location};
use crate::model::s3_shape::{GIB, MAX_PART_SIZE, MIB, MIN_PART_SIZE};

/// What to sync and how, as given. Every field has a CLI flag (and an
/// environment variable) and a JSON name.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct SyncSpec {
    /// Source: s3://BUCKET[/PREFIX], or a local directory to upload.
    #[arg(value_name = "SRC")]
    pub source: String,
    /// Destination: s3://BUCKET[/PREFIX], or a local directory to restore
    /// into (created if missing).
    #[arg(value_name = "DST")]
    pub destination: String,

    /// How to decide that an object present on both sides differs.
    #[arg(long, value_enum, default_value = "etag", env = "S3_FANOUT_MODE")]
    pub mode: DiffMode,
    /// Only consider source objects modified at or after this time
    /// (RFC 3339, or YYYY-MM-DD for midnight UTC).
    #[arg(long, value_name = "DATE", env = "S3_FANOUT_MODIFIED_SINCE")]
    pub modified_since: Option<String>,
    /// Sync the source as it was at this time (RFC 3339, or YYYY-MM-DD for
    /// midnight UTC): each key's newest version at or before it, from a
    /// versioned bucket; a key deleted then, or not yet made, is absent
    /// (and `--delete` deletes it at the destination).
    #[arg(long, value_name = "TIME", env = "S3_FANOUT_AS_OF")]
    pub as_of: Option<String>,
    /// Copy every version of a versioned source into a versioned
    /// destination, oldest first per key, delete markers as delete
    /// markers. Each copy keeps its origin's version id and time in user
    /// metadata (s3fanout-origin-version-id, s3fanout-origin-last-modified):
    /// S3 gives each copy a version id of its own. A re-run appends only
    /// what is newer.
    #[arg(long, conflicts_with_all = ["as_of", "delete"])]
    pub all_versions: bool,
    /// Only sync keys (relative to the prefix) matching this glob; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip keys matching this glob; repeatable. `*` also matches `/`.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Delete destination objects that are not in the source.
    #[arg(long, env = "S3_FANOUT_DELETE")]
    pub delete: bool,
    /// With --delete: delete at most N objects; further deletions fail the run.
    #[arg(long, value_name = "N", env = "S3_FANOUT_MAX_DELETE")]
    pub max_delete: Option<u64>,

    /// Objects copied at once, at most: the number in flight adapts below
    /// it. 256, as s5cmd's workers: at a region's 30 ms round trip, 64 in
    /// flight cap a sync near 2,100 copies/s, under what S3 takes per
    /// prefix; the adaptive limit only gets there while latency holds.
    #[arg(long, default_value_t = 256, env = "S3_FANOUT_CONCURRENCY")]
    pub concurrency: usize,
    /// Pieces of the key range listed at once (each on both sides). A range
    /// is cut at its folders, or for a flat keyspace at keys placed from its
    /// first page; a piece that lags while others are done is cut again.
    #[arg(
        long,
        default_value_t = 8,
        value_name = "N",
        env = "S3_FANOUT_LIST_CONCURRENCY"
    )]
    pub list_concurrency: usize,
    /// Keys per ListObjectsV2 page (S3's maximum, 1000, is the cheapest);
    /// smaller pages only serve tests of the listing itself.
    #[arg(
        long,
        default_value_t = 1000,
        hide = true,
        env = "S3_FANOUT_LIST_PAGE_SIZE"
    )]
    pub list_page_size: i32,
    /// Write objects above this size in parts (5MiB to 5GiB). Default: 5GiB
    /// for server-side copies (one CopyObject each, up to its limit); 8MiB
    /// when bytes pass through this machine (uploads, downloads, streamed
    /// copies), as the AWS CLI does, so files it uploaded compare equal.
    #[arg(long, value_name = "SIZE", env = "S3_FANOUT_MULTIPART_THRESHOLD")]
    pub multipart_threshold: Option<String>,
    /// Part size for objects without a part layout of their own (5MiB to
    /// 5GiB); sources uploaded in parts keep their layout. Default: 512MiB
    /// for server-side copies, 8MiB when bytes pass through this machine
    /// (where memory is --concurrency x part size at most).
    #[arg(long, value_name = "SIZE", env = "S3_FANOUT_PART_SIZE")]
    pub part_size: Option<String>,
    /// Copy sources uploaded in parts with UploadPartCopy and the same part
    /// boundaries even below the threshold, so the copy keeps the source's
    /// `-N` ETag and later runs can verify it. Turning this off saves a few
    /// requests per such object and leaves them "unverified".
    #[arg(long, env = "S3_FANOUT_NO_MIRROR_PARTS")]
    pub no_mirror_parts: bool,
    /// Parts of one object copied at once.
    #[arg(long, default_value_t = 8, env = "S3_FANOUT_PART_CONCURRENCY")]
    pub part_concurrency: usize,
    /// Store copies in this storage class instead of the source's own.
    #[arg(long, value_name = "CLASS", env = "S3_FANOUT_STORAGE_CLASS")]
    pub storage_class: Option<String>,
    /// Server-side encryption for copies: AES256 or aws:kms.
    #[arg(long, value_name = "ALGORITHM", env = "S3_FANOUT_SSE")]
    pub sse: Option<String>,
    /// KMS key for --sse aws:kms (otherwise the bucket's default key).
    #[arg(long, value_name = "KEY_ID", env = "S3_FANOUT_SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    /// Account that must own the source bucket.
    #[arg(long, value_name = "ACCOUNT", env = "S3_FANOUT_EXPECTED_SOURCE_OWNER")]
    pub expected_source_owner: Option<String>,
    /// Account that must own the destination bucket.
    #[arg(long, value_name = "ACCOUNT", env = "S3_FANOUT_EXPECTED_DEST_OWNER")]
    pub expected_dest_owner: Option<String>,
    /// Copy through this machine (GET, then PUT or UploadPart) instead of
    /// server-side: for a region pair where that is cheaper or allowed.
    /// Automatic when the two sides have different endpoints or profiles,
    /// which server-side copies cannot bridge.
    #[arg(long, env = "S3_FANOUT_STREAM")]
    pub stream: bool,
    /// Uploads store each file's uid, gid, mode and mtime as user metadata
    /// (`x-amz-meta-uid` and so on, as s3fs does); downloads restore them
    /// (ownership only when running as root).
    #[arg(long, env = "S3_FANOUT_POSIX_METADATA")]
    pub posix_metadata: bool,
    /// With --posix-metadata, restore setuid, setgid and sticky bits too,
    /// only for files whose owner is restored (as root). Without it they
    /// are masked, each with a warning row: an object's metadata is
    /// whatever the bucket's writer chose.
    #[arg(long, env = "S3_FANOUT_POSIX_SPECIAL_BITS")]
    pub posix_special_bits: bool,
    /// Accept requester-pays charges on both buckets.
    #[arg(long, env = "S3_FANOUT_REQUEST_PAYER")]
    pub request_payer: bool,

    /// Plan only: list and diff, print what would change, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip the verification pass after copying.
    #[arg(long, env = "S3_FANOUT_NO_VERIFY")]
    pub no_verify: bool,
    /// Verify by listing both sides again even when the run wrote few keys.
    /// By default a run that wrote fewer keys than a re-listing's price in
    /// HEADs checks each written key by HEAD on both sides instead. (The
    /// serverless VALIDATE phase always lists.)
    #[arg(
        long,
        env = "S3_FANOUT_VERIFY_BY_LISTING",
        conflicts_with = "no_verify"
    )]
    pub verify_by_listing: bool,
    /// Write summary.json and failures.csv to this directory or s3:// prefix.
    #[arg(long, value_name = "DIR_OR_S3_URL", env = "S3_FANOUT_REPORT")]
    pub report: Option<String>,
    /// Where the ledger of proven pairs lives: a directory or an s3://
    /// prefix, never inside either synced location. It holds the pairs
    /// whose ETags differ but whose content was proven equal (SSE-KMS and
    /// SSE-C copies, other multipart layouts), so the next run proves them
    /// from the listings alone. Default: a directory under
    /// $XDG_STATE_HOME (~/.local/state)/s3-fanout/ledgers/, named for the
    /// source and destination. In etag mode, with a bucket on one side at
    /// least.
    #[arg(long, value_name = "DIR_OR_S3_URL", env = "S3_FANOUT_STATE")]
    pub state: Option<String>,
    /// Keep no ledger of proven pairs: pairs whose ETags differ are proven
    /// again by their checksums (a HEAD of each side) on every run.
    #[arg(long, conflicts_with = "state")]
    pub no_state: bool,
    /// Failed objects (copies that failed, or verified different) the run
    /// tolerates before it fails as a whole; tolerated ones still exit 1.
    ///
    /// Above N the run fails with an error that says how many objects
    /// failed, the threshold and where the report is. At or below N there is
    /// no such error, but the failures are still reported and the exit code
    /// is still 1, as `s3-fanout run --wait` exits for a serverless run that
    /// succeeded within its threshold: exit codes say whether every object
    /// is synced, so no script takes a missing object for success. N only
    /// decides whether the run itself failed (in the serverless runtime, the
    /// execution's status).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        env = "S3_FANOUT_FAILURE_THRESHOLD"
    )]
    pub failure_threshold: u64,
    /// Stop the run once more objects have failed than
    /// `--failure-threshold` allows: no new copy starts, copies in flight
    /// finish (or abort their uploads), and the report says the run stopped
    /// after how many failures (exit 1). Serverless runs stop the whole
    /// fleet (`"fail_fast": true` in the execution input).
    #[arg(long, env = "S3_FANOUT_FAIL_FAST")]
    pub fail_fast: bool,

    /// How both sides are reached; the flags below name one side each.
    #[command(flatten)]
    #[serde(flatten)]
    pub client: ClientFlags,
    #[arg(long, value_name = "URL", env = "S3_FANOUT_SOURCE_ENDPOINT_URL")]
    pub source_endpoint_url: Option<String>,
    #[arg(long, value_name = "URL", env = "S3_FANOUT_DEST_ENDPOINT_URL")]
    pub dest_endpoint_url: Option<String>,
    #[arg(long, env = "S3_FANOUT_SOURCE_REGION")]
    pub source_region: Option<String>,
    #[arg(long, env = "S3_FANOUT_DEST_REGION")]
    pub dest_region: Option<String>,
    /// Profile for the source only (another account's credentials); the
    /// copy then streams through this machine.
    #[arg(long, env = "S3_FANOUT_SOURCE_PROFILE")]
    pub source_profile: Option<String>,
    #[arg(long, env = "S3_FANOUT_DEST_PROFILE")]
    pub dest_profile: Option<String>,
}

/// How to reach S3: the flags (and variables) every command that talks to
/// a bucket takes, `sync`'s for both sides and `export`/`import`'s.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientFlags {
    /// Endpoint URL (S3-compatible servers, local emulators).
    #[arg(long, value_name = "URL", env = "S3_FANOUT_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Region (default: from the AWS environment or profile).
    #[arg(long, env = "S3_FANOUT_REGION")]
    pub region: Option<String>,
    /// Named AWS profile.
    #[arg(long, env = "S3_FANOUT_PROFILE")]
    pub profile: Option<String>,
    /// Path-style addressing; on by default for endpoints on an IP or localhost.
    #[arg(long, env = "S3_FANOUT_PATH_STYLE")]
    pub path_style: bool,
    #[arg(
        long,
        value_enum,
        default_value = "adaptive",
        env = "S3_FANOUT_RETRY_MODE"
    )]
    pub retry_mode: RetryMode,
    /// Attempts per request, the first included (SDK default: 3).
    #[arg(long, default_value_t = 10, env = "S3_FANOUT_MAX_ATTEMPTS")]
    pub max_attempts: u32,
    #[arg(
        long,
        default_value_t = 10,
        value_name = "SECS",
        env = "S3_FANOUT_CONNECT_TIMEOUT"
    )]
    pub connect_timeout_secs: u64,
    #[arg(
        long,
        default_value_t = 120,
        value_name = "SECS",
        env = "S3_FANOUT_READ_TIMEOUT"
    )]
    pub read_timeout_secs: u64,
    /// Send at most N requests per second to each endpoint (retries count),
    /// evenly spaced: protects buckets shared with production traffic.
    #[arg(long, value_name = "N", env = "S3_FANOUT_MAX_REQUESTS_PER_SECOND")]
    pub max_requests_per_second: Option<u32>,
}

impl Default for ClientFlags {
    /// The same defaults as the flags, for specs built from JSON.
    fn default() -> Self {
        ClientFlags {
            endpoint_url: None,
            region: None,
            profile: None,
            path_style: false,
            retry_mode: RetryMode::Adaptive,
            max_attempts: 10,
            connect_timeout_secs: 10,
            read_timeout_secs: 120,
            max_requests_per_second: None,
        }
    }
}

impl ClientFlags {
    /// The values no client can work with.
    pub fn validate(&self) -> Result<(), SyncError> {
        if self.max_requests_per_second == Some(0) {
            return Err(SyncError::Config(
                "--max-requests-per-second must be at least 1".into(),
            ));
        }
        if self.max_attempts == 0 {
            return Err(SyncError::Config(
                "--max-attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The settings of one side: `endpoint` and `region` override the
    /// flags' own (the per-side flags of `sync`).
    pub fn settings(&self, endpoint: Option<&String>, region: Option<&String>) -> ClientSettings {
        let endpoint_url = endpoint.or(self.endpoint_url.as_ref()).cloned();
        // Virtual-hosted addressing puts the bucket in the host name, which
        // cannot work on an IP address or localhost.
        let local = endpoint_url.as_deref().is_some_and(|url| {
            let host = url.split("://").nth(1).unwrap_or(url);
            host.starts_with("localhost")
                || host.starts_with('[')
                || host.chars().next().is_some_and(|c| c.is_ascii_digit())
        });
        ClientSettings {
            region: region.or(self.region.as_ref()).cloned(),
            profile: self.profile.clone(),
            endpoint_url,
            force_path_style: self.path_style || local,
            retry_mode: self.retry_mode,
            max_attempts: self.max_attempts,
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            read_timeout: Duration::from_secs(self.read_timeout_secs),
            max_requests_per_second: self.max_requests_per_second,
        }
    }
}

impl Default for SyncSpec {
    /// The same defaults as the CLI flags, for specs built from JSON.
    fn default() -> Self {
        Self {
            source: String::new(),
            destination: String::new(),
            mode: DiffMode::Etag,
            modified_since: None,
            as_of: None,
            all_versions: false,
            include: Vec::new(),
            exclude: Vec::new(),
            delete: false,
            max_delete: None,
            concurrency: 256,
            list_concurrency: 8,
            list_page_size: 1000,
            multipart_threshold: None,
            part_size: None,
            part_concurrency: 8,
            no_mirror_parts: false,
            stream: false,
            posix_metadata: false,
            posix_special_bits: false,
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
            expected_source_owner: None,
            expected_dest_owner: None,
            request_payer: false,
            dry_run: false,
            no_verify: false,
            verify_by_listing: false,
            report: None,
            state: None,
            no_state: false,
            failure_threshold: 0,
            fail_fast: false,
            client: ClientFlags::default(),
            source_endpoint_url: None,
            dest_endpoint_url: None,
            source_region: None,
            dest_region: None,
            source_profile: None,
            dest_profile: None,
        }
    }
}

/// Server-side encryption requested for copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    S3,
    Kms { key_id: Option<String> },
}

/// How the diff decides.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub mode: DiffMode,
    pub modified_since: Option<DateTime>,
    pub filter: KeyFilter,
    pub delete: bool,
    /// Keys ending in `/` are skipped: one side is a directory.
    pub folder_markers_skipped: bool,
}

/// The `x-amz-request-payer` header of every request to a bucket, when the
/// run pays for requester-pays buckets (`--request-payer`). Each request
/// builder takes it with `set_request_payer`, so no request can forget it.
pub fn requester_pays(on: bool) -> Option<aws_sdk_s3::types::RequestPayer> {
    on.then_some(aws_sdk_s3::types::RequestPayer::Requester)
}

/// How objects are written.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub part_concurrency: usize,
    pub mirror_parts: bool,
    pub storage_class: Option<StorageClass>,
    pub sse: Option<Sse>,
    pub expected_source_owner: Option<String>,
    pub expected_dest_owner: Option<String>,
    pub request_payer: bool,
    /// Bytes pass through this machine: a GET, then a PUT or UploadPart,
    /// instead of CopyObject / UploadPartCopy (two endpoints or accounts).
    pub stream: bool,
    /// Store and restore POSIX attributes as user metadata (local sides).
    pub posix_metadata: bool,
    /// Restore setuid, setgid and sticky bits (with an owner, as root).
    pub posix_special_bits: bool,
    /// `--as-of`, in milliseconds since the Unix epoch: the source is read
    /// as it was then (its listing is of versions, and each copy names
    /// its version, see [`crate::model::entry::ObjectEntry::version_id`]).
    pub as_of_ms: Option<i64>,
    /// `--all-versions`: every version of the source is copied, oldest
    /// first ([`crate::engine::histories`]).
    pub all_versions: bool,
    /// User metadata a copy adds to its source's (a version's origin,
    /// with `--all-versions`); a single copy then replaces the metadata
    /// with the source's and these.
    pub extra_metadata: Option<std::collections::HashMap<String, String>>,
}

impl CopyOptions {
    /// The `x-amz-server-side-encryption` headers a write carries.
    pub fn encryption(
        &self,
    ) -> (
        Option<aws_sdk_s3::types::ServerSideEncryption>,
        Option<String>,
    ) {
        use aws_sdk_s3::types::ServerSideEncryption;
        match &self.sse {
            None => (None, None),
            Some(Sse::S3) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
        }
    }
}

/// Where the bytes of a sync go: server-side within S3, through this
/// machine between two S3 endpoints, or between a directory and a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    ServerSide,
    Streamed,
    Upload,
    Download,
}

impl Transfer {
    /// Whether the bytes pass through this machine (and so its memory).
    pub fn through_this_machine(self) -> bool {
        self != Transfer::ServerSide
    }
}

/// A validated sync configuration.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub source: Location,
    pub destination: Location,
    pub transfer: Transfer,
    pub range: KeyRange,
    pub source_client: ClientSettings,
    pub destination_client: ClientSettings,
    pub diff: DiffOptions,
    pub copy: CopyOptions,
    pub max_delete: Option<u64>,
    pub concurrency: usize,
    /// Pieces of the range listed at once, and keys per page.
    pub list_concurrency: usize,
    pub list_page_size: i32,
    pub dry_run: bool,
    pub verify: bool,
    /// Verify by listing again even after a few writes.
    pub verify_by_listing: bool,
    pub report: Option<ReportLocation>,
    /// Where the ledger of proven pairs lives, when the run keeps one.
    pub ledger: Option<Location>,
    /// Failed objects tolerated before the run fails as a whole.
    pub failure_threshold: u64,
    /// Stop at once when the failures pass the threshold.
    pub fail_fast: bool,
}

impl TryFrom<SyncSpec> for SyncOptions {
    type Error = SyncError;

    fn try_from(spec: SyncSpec) -> Result<Self, SyncError> {
        // Absolute, so reports name the directory wherever they are read.
        let absolute = |location: Location| match location {
            Location::Local(path) => std::path::absolute(&path)
                .map(Location::Local)
                .map_err(|e| SyncError::Config(format!("{}: {e}", path.display()))),
            s3 => Ok(s3),
        };
        let source = absolute(spec.source.parse()?)?;
        let destination = absolute(spec.destination.parse()?)?;
        let (source_client, destination_client) = client_settings(&spec);
        let as_of_ms = as_of(&spec, &source)?;
        let now_ms = DateTime::from(std::time::SystemTime::now())
            .to_millis()
            .unwrap_or(i64::MAX);
        let transfer = choose_transfer(
            &source,
            &destination,
            (&source_client, &destination_client),
            (spec.stream, as_of_ms.is_some_and(|t| t < now_ms)),
        )?;
        check_limits(&spec)?;
        if spec.all_versions && !matches!(transfer, Transfer::ServerSide | Transfer::Streamed) {
            // A directory has no versions to read or to append to.
            return Err(SyncError::Config(format!(
                "--all-versions copies between two versioned buckets; {source} to {destination} is not that"
            )));
        }
        let (multipart_threshold, part_size) = part_sizes(&spec, transfer)?;
        let (storage_class, sse) = encryption(&spec)?;
        check_posix(&spec, transfer)?;
        let modified_since = spec
            .modified_since
            .as_deref()
            .map(|text| parse_date("--modified-since", text))
            .transpose()?;
        let report = spec.report.as_deref().map(str::parse).transpose()?;
        let ledger = ledger_location(&spec, (&source, &destination))?;

        Ok(SyncOptions {
            source,
            destination,
            transfer,
            range: KeyRange::all(),
            source_client,
            destination_client,
            diff: DiffOptions {
                mode: spec.mode,
                modified_since,
                filter: KeyFilter::new(&spec.include, &spec.exclude)?,
                delete: spec.delete,
                folder_markers_skipped: matches!(transfer, Transfer::Upload | Transfer::Download),
            },
            copy: CopyOptions {
                multipart_threshold,
                part_size,
                part_concurrency: spec.part_concurrency,
                mirror_parts: !spec.no_mirror_parts,
                storage_class,
                sse,
                expected_source_owner: spec.expected_source_owner,
                expected_dest_owner: spec.expected_dest_owner,
                request_payer: spec.request_payer,
                stream: transfer == Transfer::Streamed,
                posix_metadata: spec.posix_metadata,
                posix_special_bits: spec.posix_special_bits,
                as_of_ms,
                all_versions: spec.all_versions,
                extra_metadata: None,
            },
            max_delete: spec.max_delete,
            concurrency: spec.concurrency,
            list_concurrency: spec.list_concurrency,
            list_page_size: spec.list_page_size,
            dry_run: spec.dry_run,
            verify: !spec.no_verify && !spec.dry_run,
            verify_by_listing: spec.verify_by_listing,
            report,
            ledger,
            failure_threshold: spec.failure_threshold,
            fail_fast: spec.fail_fast,
        })
    }
}

impl SyncOptions {
    /// Whether verification lists both sides again rather than HEAD the
    /// written keys: asked for, or `--as-of`, whose source is a listing of
    /// versions at a time (a HEAD of a key reads its current version).
    pub fn verifies_by_listing(&self) -> bool {
        self.verify_by_listing || self.copy.as_of_ms.is_some()
    }
}

/// Where the ledger of proven pairs lives: `--state`, else a directory
/// under the user's state directory named for the two locations; none
/// with `--no-state`, outside `etag` mode, or between two directories
/// (whose files are compared by their bytes). A directory and a KMS bucket
/// need it as two buckets do: a file's MD5 is never a KMS object's ETag.
/// Never inside either synced location: a sync would copy it, or
/// `--delete` delete it.
fn ledger_location(
    spec: &SyncSpec,
    (source, destination): (&Location, &Location),
) -> Result<Option<Location>, SyncError> {
    if let (Location::Local(_), Location::Local(_)) = (source, destination) {
        return Ok(None);
    }
    if spec.no_state || spec.mode != DiffMode::Etag {
        return Ok(None);
    }
    let location = match &spec.state {
        Some(state) => match state.parse::<Location>()? {
            Location::Local(dir) => Location::Local(
                std::path::absolute(&dir)
                    .map_err(|e| SyncError::Config(format!("--state {}: {e}", dir.display())))?,
            ),
            Location::S3(mut s3) => {
                if !s3.prefix.is_empty() && !s3.prefix.ends_with('/') {
                    s3.prefix.push('/');
                }
                Location::S3(s3)
            }
        },
        None => {
            let base = std::env::var_os("XDG_STATE_HOME")
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state"))
                });
            let Some(base) = base else {
                tracing::warn!(
                    "no HOME or XDG_STATE_HOME: keeping no ledger of proven pairs (use --state)"
                );
                return Ok(None);
            };
            Location::Local(
                base.join("s3-fanout/ledgers")
                    .join(ledger_name(source, destination)),
            )
        }
    };
    for side in [source, destination] {
        let inside = match (&location, side) {
            (Location::S3(state), Location::S3(synced)) => state.overlaps(synced),
            (Location::Local(state), Location::Local(synced)) => {
                std::path::absolute(synced).is_ok_and(|synced| state.starts_with(synced))
            }
            _ => false,
        };
        if inside {
            return Err(SyncError::Config(format!(
                "--state {location} is inside {side}, which this run syncs: the ledger would be copied, or deleted by --delete; choose a location outside both"
            )));
        }
    }
    Ok(Some(location))
}

/// The name of the ledger about one source and destination: a digest of
/// the two, so each pair of locations has its own and none is shared.
pub fn ledger_name(source: &Location, destination: &Location) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{source}\n{destination}").as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Each side's client settings: the shared flags, with that side's
/// endpoint, region and profile where given.
fn client_settings(spec: &SyncSpec) -> (ClientSettings, ClientSettings) {
    let mut source_client = spec.client.settings(
        spec.source_endpoint_url.as_ref(),
        spec.source_region.as_ref(),
    );
    source_client.profile = spec.source_profile.clone().or(source_client.profile);
    let mut destination_client = spec
        .client
        .settings(spec.dest_endpoint_url.as_ref(), spec.dest_region.as_ref());
    destination_client.profile = spec.dest_profile.clone().or(destination_client.profile);
    (source_client, destination_client)
}

/// How this run's objects move, decided once from its two sides: the mover
/// ([`crate::backend::transfer::Mover::for_run`]) is built from it.
/// How the bytes travel. `past`: the source is read as of a past time,
/// which is what makes a restore in place (destination = source) sound.
fn choose_transfer(
    source: &Location,
    destination: &Location,
    (source_client, destination_client): (&ClientSettings, &ClientSettings),
    (stream, past): (bool, bool),
) -> Result<Transfer, SyncError> {
    Ok(match (source, destination) {
        (Location::Local(_), Location::Local(_)) => {
            return Err(SyncError::Config(format!(
                "{source} and {destination} are both local directories: one side must be s3://BUCKET[/PREFIX] (use rsync between directories)"
            )));
        }
        (Location::Local(dir), Location::S3(_)) => {
            check_source_directory(dir)?;
            Transfer::Upload
        }
        (Location::S3(_), Location::Local(dir)) => {
            check_destination_directory(dir)?;
            Transfer::Download
        }
        (Location::S3(s), Location::S3(d)) => {
            // Two endpoints can hold buckets of the same name that are
            // different buckets, so overlap only means something on
            // the same endpoint.
            // Restoring a location in place as of a past time is sound: the
            // listing is of versions then, and whatever the run writes is
            // newer, so it never reads its own writes; each copy of an old
            // version onto its key is how S3 restores a version ("Restoring
            // previous versions", <https://docs.aws.amazon.com/AmazonS3/latest/userguide/RestoringPreviousVersions.html>).
            let in_place = past && s == d;
            if source_client.endpoint_url == destination_client.endpoint_url
                && s.overlaps(d)
                && !in_place
            {
                return Err(SyncError::Config(format!(
                    "the destination {destination} overlaps the source {source}: \
                     one prefix contains the other in the same bucket, so the sync would copy into the range it reads"
                )));
            }
            // CopyObject runs inside one endpoint, with one set of
            // credentials that can read the source and write the
            // destination; across endpoints or profiles only the bytes
            // themselves can travel. Regions alone do not need it.
            let bridged = source_client.endpoint_url != destination_client.endpoint_url
                || source_client.profile != destination_client.profile;
            if stream || bridged {
                Transfer::Streamed
            } else {
                Transfer::ServerSide
            }
        }
    })
}

/// Counts and sizes that must be positive or within S3's limits.
fn check_limits(spec: &SyncSpec) -> Result<(), SyncError> {
    if spec.concurrency == 0 || spec.part_concurrency == 0 || spec.list_concurrency == 0 {
        return Err(SyncError::Config(
            "--concurrency, --part-concurrency and --list-concurrency must be at least 1".into(),
        ));
    }
    if !(1..=crate::model::s3_shape::MAX_PAGE_SIZE).contains(&spec.list_page_size) {
        return Err(SyncError::Config(format!(
            "--list-page-size must be between 1 and {}, got {}",
            crate::model::s3_shape::MAX_PAGE_SIZE,
            spec.list_page_size
        )));
    }
    spec.client.validate()?;
    if spec.max_delete.is_some() && !spec.delete {
        return Err(SyncError::Config(
            "--max-delete only makes sense with --delete".into(),
        ));
    }
    Ok(())
}

/// The multipart threshold and part size, with defaults that depend on
/// whether the bytes pass through this machine.
fn part_sizes(spec: &SyncSpec, transfer: Transfer) -> Result<(u64, u64), SyncError> {
    // Server-side, big parts cost nothing but fewer requests; through
    // this machine a part is memory, and 8 MiB is the AWS CLI's size,
    // so objects it uploaded get the same ETag from a local file.
    let (default_threshold, default_part) = if transfer.through_this_machine() {
        ("8MiB", "8MiB")
    } else {
        ("5GiB", "512MiB")
    };
    let threshold_text = spec
        .multipart_threshold
        .as_deref()
        .unwrap_or(default_threshold);
    let multipart_threshold = parse_size(threshold_text, "--multipart-threshold")?;
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&multipart_threshold) {
        return Err(SyncError::Config(format!(
            "--multipart-threshold must be between 5MiB and 5GiB (CopyObject's limit), got {threshold_text}"
        )));
    }
    let part_text = spec.part_size.as_deref().unwrap_or(default_part);
    let part_size = parse_size(part_text, "--part-size")?;
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        return Err(SyncError::Config(format!(
            "--part-size must be between 5MiB and 5GiB (S3's part limits), got {part_text}"
        )));
    }
    Ok((multipart_threshold, part_size))
}

/// How copies are stored: storage class and server-side encryption.
fn encryption(spec: &SyncSpec) -> Result<(Option<StorageClass>, Option<Sse>), SyncError> {
    let storage_class = spec
        .storage_class
        .as_deref()
        .map(parse_storage_class)
        .transpose()?;
    let sse = match (spec.sse.as_deref(), spec.sse_kms_key_id.clone()) {
        (None, None) => None,
        (Some("AES256"), None) => Some(Sse::S3),
        (Some("aws:kms"), key_id) => Some(Sse::Kms { key_id }),
        (Some("AES256") | None, Some(_)) => {
            return Err(SyncError::Config(
                "--sse-kms-key-id needs --sse aws:kms".into(),
            ));
        }
        (Some(other), _) => {
            return Err(SyncError::Config(format!(
                "--sse must be AES256 or aws:kms, got {other:?}"
            )));
        }
    };
    Ok((storage_class, sse))
}

/// POSIX attribute flags that only make sense for some transfers.
fn check_posix(spec: &SyncSpec, transfer: Transfer) -> Result<(), SyncError> {
    if transfer == Transfer::Download && spec.posix_metadata && spec.mode == DiffMode::Mtime {
        return Err(SyncError::Config(
            "--posix-metadata restores each file's original mtime, which is older than its object's, so --mode mtime would download every file again: use --mode size or etag".into(),
        ));
    }
    if spec.posix_special_bits && !(spec.posix_metadata && transfer == Transfer::Download) {
        return Err(SyncError::Config(
            "--posix-special-bits applies to restores into a directory with --posix-metadata"
                .into(),
        ));
    }
    Ok(())
}

impl SyncOptions {
    /// Both sides as buckets: the serverless runtime and server-side
    /// copies only ever have those.
    pub fn buckets(&self) -> Result<(&S3Location, &S3Location), SyncError> {
        match (&self.source, &self.destination) {
            (Location::S3(source), Location::S3(destination)) => Ok((source, destination)),
            _ => Err(SyncError::Config(format!(
                "{} to {}: local directories are synced by the CLI (`s3-fanout sync`), not the serverless runtime",
                self.source, self.destination
            ))),
        }
    }
}

/// An upload's source must be a directory that exists: a typo must not
/// look like an empty source (and with --delete, empty the bucket).
fn check_source_directory(dir: &std::path::Path) -> Result<(), SyncError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(SyncError::Config(format!(
            "the source {} is not a directory",
            dir.display()
        ))),
        Err(e) => Err(SyncError::Config(format!(
            "the source directory {} cannot be read: {e}",
            dir.display()
        ))),
    }
}

/// A restore's destination is created if missing, but cannot be a file.
fn check_destination_directory(dir: &std::path::Path) -> Result<(), SyncError> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(SyncError::Config(format!(
            "the destination {} exists and is not a directory",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Parse `5368709120`, `5GiB`, `512MiB`, `64KiB`, `5GB` (decimal) into bytes.
pub fn parse_size(text: &str, flag: &str) -> Result<u64, SyncError> {
    let bad = || {
        SyncError::Config(format!(
            "{flag}: {text:?} is not a size such as 5GiB, 8MiB or 1048576"
        ))
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1024,
        "mib" | "m" => MIB,
        "gib" | "g" => GIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).ok_or_else(bad)
}

fn parse_storage_class(text: &str) -> Result<StorageClass, SyncError> {
    if StorageClass::values().contains(&text) {
        Ok(StorageClass::from(text))
    } else {
        Err(SyncError::Config(format!(
            "--storage-class {text:?} is not one of {}",
            StorageClass::values().join(", ")
        )))
    }
}

/// `--as-of`: a time, for a bucket source (a directory has no versions).
fn as_of(spec: &SyncSpec, source: &Location) -> Result<Option<i64>, SyncError> {
    let Some(text) = spec.as_of.as_deref() else {
        return Ok(None);
    };
    let at = parse_date("--as-of", text)?;
    if !matches!(source, Location::S3(_)) {
        return Err(SyncError::Config(format!(
            "--as-of needs a versioned bucket as the source; {} is a directory",
            source
        )));
    }
    at.to_millis()
        .map(Some)
        .map_err(|e| SyncError::Config(format!("--as-of {text:?}: {e}")))
}

/// `2024-03-01T12:00:00Z` or `2024-03-01` (midnight UTC), given to `flag`.
pub fn parse_date(flag: &str, text: &str) -> Result<DateTime, SyncError> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    DateTime::from_str(&full, Format::DateTime).map_err(|e| {
        SyncError::Config(format!(
            "{flag} {text:?} is not a date (use 2024-03-01 or 2024-03-01T12:00:00Z): {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(src: &str, dst: &str) -> SyncSpec {
        SyncSpec {
            source: src.into(),
            destination: dst.into(),
            ..SyncSpec::default()
        }
    }

    fn config_error(spec: SyncSpec) -> String {
        match SyncOptions::try_from(spec) {
            Err(SyncError::Config(msg)) => msg,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let options =
            SyncOptions::try_from(spec("s3://src-bucket", "s3://dst-bucket/backup")).unwrap();
        assert_eq!(options.copy.multipart_threshold, 5 * GIB);
        assert_eq!(options.buckets().unwrap().1.prefix, "backup/");
        assert_eq!(options.transfer, Transfer::ServerSide);
        assert!(options.verify);
        assert_eq!(options.source_client.max_attempts, 10);
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        assert!(config_error(spec("s3://bucket/a", "s3://bucket/a/b")).contains("overlaps"));
        assert!(config_error(spec("s3://bucket", "s3://bucket/copy")).contains("overlaps"));
    }

    #[test]
    fn same_bucket_on_different_endpoints_is_not_an_overlap() {
        let mut s = spec("s3://bucket", "s3://bucket");
        s.dest_endpoint_url = Some("http://127.0.0.1:9000".into());
        assert!(SyncOptions::try_from(s).is_ok());
    }

    #[test]
    fn endpoints_or_profiles_apart_stream_and_regions_do_not() {
        let transfer = |f: &dyn Fn(&mut SyncSpec)| {
            let mut s = spec("s3://aaa", "s3://bbb");
            f(&mut s);
            let o = SyncOptions::try_from(s).unwrap();
            assert_eq!(o.copy.stream, o.transfer == Transfer::Streamed);
            (o.transfer, o.copy.part_size)
        };
        assert_eq!(transfer(&|_| {}), (Transfer::ServerSide, 512 * MIB));
        assert_eq!(
            transfer(&|s| s.dest_region = Some("eu-west-1".into())).0,
            Transfer::ServerSide
        );
        assert_eq!(
            transfer(&|s| s.dest_endpoint_url = Some("http://127.0.0.1:9000".into())),
            (Transfer::Streamed, 8 * MIB)
        );
        assert_eq!(
            transfer(&|s| s.source_profile = Some("other-account".into())).0,
            Transfer::Streamed
        );
        assert_eq!(transfer(&|s| s.stream = true).0, Transfer::Streamed);
        assert_eq!(
            transfer(&|s| {
                s.stream = true;
                s.part_size = Some("16MiB".into());
            }),
            (Transfer::Streamed, 16 * MIB)
        );
    }

    #[test]
    fn local_directories_upload_or_download() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let up = SyncOptions::try_from(spec(&path, "s3://bbb/p")).unwrap();
        assert_eq!(up.transfer, Transfer::Upload);
        assert!(up.buckets().is_err());
        let restore = format!("{path}/new/sub");
        let down = SyncOptions::try_from(spec("s3://bbb/p", &restore)).unwrap();
        assert_eq!(down.transfer, Transfer::Download);
        assert!(config_error(spec(&path, &path)).contains("both local"));
        assert!(config_error(spec("./no/such/dir", "s3://bbb")).contains("cannot be read"));
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let file = file.display().to_string();
        assert!(config_error(spec(&file, "s3://bbb")).contains("not a directory"));
        assert!(config_error(spec("s3://bbb", &file)).contains("not a directory"));
    }

    #[test]
    fn special_bits_need_a_restore_with_posix_metadata() {
        let mut s = spec("s3://src-bucket", "/tmp/restore");
        s.posix_special_bits = true;
        assert!(config_error(s.clone()).contains("--posix-metadata"));
        s.posix_metadata = true;
        assert!(SyncOptions::try_from(s).is_ok());
        let mut upload = spec("/tmp", "s3://dst-bucket");
        upload.posix_metadata = true;
        upload.posix_special_bits = true;
        let refused = config_error(upload);
        assert!(refused.contains("restores"), "{refused}");
    }

    #[test]
    fn max_delete_requires_delete() {
        let mut s = spec("s3://aaa", "s3://bbb");
        s.max_delete = Some(3);
        assert!(config_error(s).contains("--delete"));
    }

    #[test]
    fn thresholds_outside_s3_limits_are_refused() {
        let mut s = spec("s3://aaa", "s3://bbb");
        s.multipart_threshold = Some("6GiB".into());
        assert!(config_error(s).contains("--multipart-threshold"));
        let mut s = spec("s3://aaa", "s3://bbb");
        s.part_size = Some("1MiB".into());
        assert!(config_error(s).contains("--part-size"));
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("5MiB", "x").unwrap(), 5 * MIB);
        assert_eq!(parse_size("5GiB", "x").unwrap(), 5 * GIB);
        assert_eq!(parse_size("1000", "x").unwrap(), 1000);
        assert_eq!(parse_size("2MB", "x").unwrap(), 2_000_000);
        assert!(parse_size("lots", "x").is_err());
        assert!(parse_size("99999999999999GiB", "x").is_err());
    }

    #[test]
    fn sse_and_storage_class_are_checked() {
        let mut s = spec("s3://aaa", "s3://bbb");
        s.sse_kms_key_id = Some("k".into());
        assert!(config_error(s).contains("aws:kms"));
        let mut s = spec("s3://aaa", "s3://bbb");
        s.storage_class = Some("COLD".into());
        assert!(config_error(s).contains("--storage-class"));
        let mut s = spec("s3://aaa", "s3://bbb");
        s.sse = Some("aws:kms".into());
        s.storage_class = Some("GLACIER_IR".into());
        let o = SyncOptions::try_from(s).unwrap();
        assert_eq!(o.copy.sse, Some(Sse::Kms { key_id: None }));
    }

    #[test]
    fn dates_accept_day_or_timestamp() {
        assert_eq!(
            parse_date("--x", "2024-03-01").unwrap().secs(),
            1_709_251_200
        );
        assert!(parse_date("--x", "2024-03-01T12:00:00Z").is_ok());
        assert!(
            config_error({
                let mut s = spec("s3://aaa", "s3://bbb");
                s.modified_since = Some("yesterday".into());
                s
            })
            .contains("--modified-since")
        );
    }

    #[test]
    fn local_endpoints_get_path_style() {
        let mut s = spec("s3://aaa", "s3://bbb");
        s.client.endpoint_url = Some("http://127.0.0.1:5000".into());
        let o = SyncOptions::try_from(s).unwrap();
        assert!(o.source_client.force_path_style && o.destination_client.force_path_style);
    }
}

/// How to decide that two objects with the same key differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DiffMode {
    /// Copy only keys absent from the destination.
    Missing,
    /// Also copy when the sizes differ.
    Size,
    /// Also copy when the sizes differ or the source was modified after
    /// the destination (as `aws s3 sync` decides). A copy is newer than its
    /// source, and a downloaded file gets its object's time, so only a real
    /// change makes a source newer. Never reads file contents.
    Mtime,
    /// Also copy when comparable ETags differ (multipart-aware).
    Etag,
}
