//! Parse, then validate: [`SyncSpec`] is what a user (CLI flags) or an event
//! (JSON, in the Lambda runtime) asks for; [`SyncOptions`] is the validated
//! configuration every stage reads. [`SyncOptions::try_from`] is the only
//! place a spec becomes options, with one small check per conflict.

use std::time::Duration;

use aws_sdk_s3::types::StorageClass;
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde::{Deserialize, Serialize};

use crate::client::{ClientSettings, RetryMode};
use crate::diff::DiffMode;
use crate::error::SyncError;
use crate::filter::KeyFilter;
use crate::location::{KeyRange, S3Location};
use crate::report::ReportLocation;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// S3's limits for a part of a multipart upload, and for a single CopyObject.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
pub const MAX_PART_SIZE: u64 = 5 * GIB;
pub const MAX_PARTS: u64 = 10_000;

/// What to sync and how, as given. Every field has a CLI flag (and an
/// environment variable) and a JSON name.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct SyncSpec {
    /// Source, s3://BUCKET[/PREFIX]
    #[arg(value_name = "SRC")]
    pub source: String,
    /// Destination, s3://BUCKET[/PREFIX]
    #[arg(value_name = "DST")]
    pub destination: String,

    /// How to decide that an object present on both sides differs.
    #[arg(long, value_enum, default_value = "etag", env = "S3_FANOUT_MODE")]
    pub mode: DiffMode,
    /// Only consider source objects modified at or after this time
    /// (RFC 3339, or YYYY-MM-DD for midnight UTC).
    #[arg(long, value_name = "DATE", env = "S3_FANOUT_MODIFIED_SINCE")]
    pub modified_since: Option<String>,
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

    /// Objects copied at once.
    #[arg(long, default_value_t = 64, env = "S3_FANOUT_CONCURRENCY")]
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
    /// Send at most N requests per second to each endpoint (retries count),
    /// evenly spaced: protects buckets shared with production traffic.
    #[arg(long, value_name = "N", env = "S3_FANOUT_MAX_REQUESTS_PER_SECOND")]
    pub max_requests_per_second: Option<u32>,
    /// Copy objects above this size with multipart UploadPartCopy (max 5GiB).
    #[arg(
        long,
        default_value = "5GiB",
        value_name = "SIZE",
        env = "S3_FANOUT_MULTIPART_THRESHOLD"
    )]
    pub multipart_threshold: String,
    /// Part size for multipart copies of sources without a part layout of
    /// their own (5MiB to 5GiB); sources uploaded in parts keep their layout.
    #[arg(
        long,
        default_value = "512MiB",
        value_name = "SIZE",
        env = "S3_FANOUT_PART_SIZE"
    )]
    pub part_size: String,
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

    /// Endpoint URL for both sides (S3-compatible servers, local emulators).
    #[arg(long, value_name = "URL", env = "S3_FANOUT_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    #[arg(long, value_name = "URL", env = "S3_FANOUT_SOURCE_ENDPOINT_URL")]
    pub source_endpoint_url: Option<String>,
    #[arg(long, value_name = "URL", env = "S3_FANOUT_DEST_ENDPOINT_URL")]
    pub dest_endpoint_url: Option<String>,
    /// Region for both sides (default: from the AWS environment or profile).
    #[arg(long, env = "S3_FANOUT_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "S3_FANOUT_SOURCE_REGION")]
    pub source_region: Option<String>,
    #[arg(long, env = "S3_FANOUT_DEST_REGION")]
    pub dest_region: Option<String>,
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
}

impl Default for SyncSpec {
    /// The same defaults as the CLI flags, for specs built from JSON.
    fn default() -> Self {
        Self {
            source: String::new(),
            destination: String::new(),
            mode: DiffMode::Etag,
            modified_since: None,
            include: Vec::new(),
            exclude: Vec::new(),
            delete: false,
            max_delete: None,
            concurrency: 64,
            list_concurrency: 8,
            list_page_size: 1000,
            max_requests_per_second: None,
            multipart_threshold: "5GiB".into(),
            part_size: "512MiB".into(),
            part_concurrency: 8,
            no_mirror_parts: false,
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
            failure_threshold: 0,
            endpoint_url: None,
            source_endpoint_url: None,
            dest_endpoint_url: None,
            region: None,
            source_region: None,
            dest_region: None,
            profile: None,
            path_style: false,
            retry_mode: RetryMode::Adaptive,
            max_attempts: 10,
            connect_timeout_secs: 10,
            read_timeout_secs: 120,
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
}

/// A validated sync configuration.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub source: S3Location,
    pub destination: S3Location,
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
    /// Failed objects tolerated before the run fails as a whole.
    pub failure_threshold: u64,
}

impl TryFrom<SyncSpec> for SyncOptions {
    type Error = SyncError;

    fn try_from(spec: SyncSpec) -> Result<Self, SyncError> {
        let source: S3Location = spec.source.parse()?;
        let destination: S3Location = spec.destination.parse()?;

        let source_client = client_settings(
            &spec,
            spec.source_endpoint_url.as_ref(),
            spec.source_region.as_ref(),
        );
        let destination_client = client_settings(
            &spec,
            spec.dest_endpoint_url.as_ref(),
            spec.dest_region.as_ref(),
        );
        // Two endpoints can hold buckets of the same name that are different
        // buckets, so overlap only means something on the same endpoint.
        if source_client.endpoint_url == destination_client.endpoint_url
            && source.overlaps(&destination)
        {
            return Err(SyncError::Config(format!(
                "the destination {destination} overlaps the source {source}: \
                 one prefix contains the other in the same bucket, so the sync would copy into the range it reads"
            )));
        }

        if spec.concurrency == 0 || spec.part_concurrency == 0 || spec.list_concurrency == 0 {
            return Err(SyncError::Config(
                "--concurrency, --part-concurrency and --list-concurrency must be at least 1"
                    .into(),
            ));
        }
        if !(1..=crate::listing::MAX_PAGE_SIZE).contains(&spec.list_page_size) {
            return Err(SyncError::Config(format!(
                "--list-page-size must be between 1 and {}, got {}",
                crate::listing::MAX_PAGE_SIZE,
                spec.list_page_size
            )));
        }
        if spec.max_requests_per_second == Some(0) {
            return Err(SyncError::Config(
                "--max-requests-per-second must be at least 1".into(),
            ));
        }
        if spec.max_attempts == 0 {
            return Err(SyncError::Config(
                "--max-attempts must be at least 1".into(),
            ));
        }
        if spec.max_delete.is_some() && !spec.delete {
            return Err(SyncError::Config(
                "--max-delete only makes sense with --delete".into(),
            ));
        }

        let multipart_threshold = parse_size(&spec.multipart_threshold, "--multipart-threshold")?;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&multipart_threshold) {
            return Err(SyncError::Config(format!(
                "--multipart-threshold must be between 5MiB and 5GiB (CopyObject's limit), got {}",
                spec.multipart_threshold
            )));
        }
        let part_size = parse_size(&spec.part_size, "--part-size")?;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(SyncError::Config(format!(
                "--part-size must be between 5MiB and 5GiB (S3's part limits), got {}",
                spec.part_size
            )));
        }

        let storage_class = spec
            .storage_class
            .as_deref()
            .map(parse_storage_class)
            .transpose()?;
        let sse = match (spec.sse.as_deref(), spec.sse_kms_key_id) {
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

        let modified_since = spec.modified_since.as_deref().map(parse_date).transpose()?;
        let report = spec.report.as_deref().map(str::parse).transpose()?;

        Ok(SyncOptions {
            source,
            destination,
            range: KeyRange::all(),
            source_client,
            destination_client,
            diff: DiffOptions {
                mode: spec.mode,
                modified_since,
                filter: KeyFilter::new(&spec.include, &spec.exclude)?,
                delete: spec.delete,
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
            },
            max_delete: spec.max_delete,
            concurrency: spec.concurrency,
            list_concurrency: spec.list_concurrency,
            list_page_size: spec.list_page_size,
            dry_run: spec.dry_run,
            verify: !spec.no_verify && !spec.dry_run,
            verify_by_listing: spec.verify_by_listing,
            report,
            failure_threshold: spec.failure_threshold,
        })
    }
}

pub(crate) fn client_settings(
    spec: &SyncSpec,
    endpoint: Option<&String>,
    region: Option<&String>,
) -> ClientSettings {
    let endpoint_url = endpoint.or(spec.endpoint_url.as_ref()).cloned();
    // Virtual-hosted addressing puts the bucket in the host name, which
    // cannot work on an IP address or localhost.
    let local = endpoint_url.as_deref().is_some_and(|url| {
        let host = url.split("://").nth(1).unwrap_or(url);
        host.starts_with("localhost")
            || host.starts_with('[')
            || host.chars().next().is_some_and(|c| c.is_ascii_digit())
    });
    ClientSettings {
        region: region.or(spec.region.as_ref()).cloned(),
        profile: spec.profile.clone(),
        endpoint_url,
        force_path_style: spec.path_style || local,
        retry_mode: spec.retry_mode,
        max_attempts: spec.max_attempts,
        connect_timeout: Duration::from_secs(spec.connect_timeout_secs),
        read_timeout: Duration::from_secs(spec.read_timeout_secs),
        max_requests_per_second: spec.max_requests_per_second,
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

/// `2024-03-01T12:00:00Z` or `2024-03-01` (midnight UTC).
pub fn parse_date(text: &str) -> Result<DateTime, SyncError> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    DateTime::from_str(&full, Format::DateTime).map_err(|e| {
        SyncError::Config(format!(
            "--modified-since {text:?} is not a date (use 2024-03-01 or 2024-03-01T12:00:00Z): {e}"
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
        assert_eq!(options.destination.prefix, "backup/");
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
    fn max_delete_requires_delete() {
        let mut s = spec("s3://aaa", "s3://bbb");
        s.max_delete = Some(3);
        assert!(config_error(s).contains("--delete"));
    }

    #[test]
    fn thresholds_outside_s3_limits_are_refused() {
        let mut s = spec("s3://aaa", "s3://bbb");
        s.multipart_threshold = "6GiB".into();
        assert!(config_error(s).contains("--multipart-threshold"));
        let mut s = spec("s3://aaa", "s3://bbb");
        s.part_size = "1MiB".into();
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
        assert_eq!(parse_date("2024-03-01").unwrap().secs(), 1_709_251_200);
        assert!(parse_date("2024-03-01T12:00:00Z").is_ok());
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
        s.endpoint_url = Some("http://127.0.0.1:5000".into());
        let o = SyncOptions::try_from(s).unwrap();
        assert!(o.source_client.force_path_style && o.destination_client.force_path_style);
    }
}
