//! Shared harness for the integration tests: a real S3 API (moto) on
//! loopback, seeding and inspection helpers, and a way to run the CLI.
//!
//! Each test binary (`tests/*.rs` with `mod support;`) gets one moto server,
//! started on first use and shared by all its tests, which keep apart by
//! using [`unique_bucket`] names. The server is launched through
//! `scripts/moto.sh run-with-parent`, which watches this process and stops
//! moto when it is gone, however the test binary ends.
//!
//! The helpers panic with the full SDK error on failure: they set up and
//! inspect state, so a failure there is a broken test bed, not a result.
//!
//! ETags are returned exactly as S3 sends them, double quotes included
//! (`"abc…-3"`), the same form as `head(..).e_tag()` and the SDK's listings,
//! so any two of them compare directly.

#![allow(dead_code)]
pub mod fault_proxy;
pub mod local_stack;
pub mod synthetic;
pub mod versioned;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};

/// Region used everywhere; moto accepts any, SigV4 needs one.
pub const REGION: &str = "us-east-1";

/// Environment every test process and every spawned CLI runs with: moto's
/// dummy credentials, and no path to a developer's own `~/.aws`, instance
/// metadata or proxy, so a test can neither pass nor fail because of the
/// machine it runs on.
const TEST_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", REGION),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/dev/null"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ("NO_PROXY", "127.0.0.1,localhost"),
    ("no_proxy", "127.0.0.1,localhost"),
];

/// Variables that would otherwise override [`TEST_ENV`] or point the SDK
/// somewhere else (a named profile that /dev/null cannot hold, a real
/// endpoint, a session token that does not match the dummy keys).
const SCRUBBED_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

/// How long moto may take to answer once launched (it needs ~2 s here).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`, ready for `--endpoint-url`.
    pub endpoint: String,
    pub port: u16,
    /// moto's `MOTO_PORT`: where its Step Functions interpreter sends
    /// `lambda:invoke`. The serverless tests run the local stack's Lambda
    /// router there; other binaries leave it unused.
    pub router_port: u16,
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn moto_script() -> PathBuf {
    repo_root().join("scripts").join("moto.sh")
}

/// Put [`TEST_ENV`] into this process's environment, once.
///
/// The library's client factory reads credentials through the SDK's default
/// chain (the environment), so the process itself must carry them; every
/// helper that can lead to an env read calls this first.
fn init_env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: this runs once, inside the OnceLock initialiser, which every
        // harness entry point passes through before it builds a client or
        // spawns a process; concurrent callers block on the OnceLock, and
        // nothing else in the test binaries reads the environment.
        unsafe {
            for name in SCRUBBED_ENV {
                std::env::remove_var(name);
            }
            for (name, value) in TEST_ENV {
                std::env::set_var(name, value);
            }
        }
    });
}

/// The moto server of this test binary, started on first call.
///
/// Blocks while it starts (a few seconds; about a minute the very first time
/// on a machine, while `scripts/moto.sh install` fills `.venv/`). Calling it
/// from an async test is fine: nothing else needs that test's runtime then.
pub fn moto() -> &'static Moto {
    // A Result, not a Moto: if the start fails, every test of the binary
    // reports the same error at once instead of each retrying for a minute.
    static MOTO: OnceLock<Result<Moto, String>> = OnceLock::new();
    match MOTO.get_or_init(start_moto) {
        Ok(moto) => moto,
        Err(why) => panic!("{why}"),
    }
}

fn start_moto() -> Result<Moto, String> {
    init_env();
    let script = moto_script();

    // Install outside the readiness timeout: the first install downloads
    // moto and takes about a minute; afterwards this returns in ~0.1 s.
    let install = Command::new(&script)
        .arg("install")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !install.success() {
        return Err(format!("`{} install` failed: {install}", script.display()));
    }

    let port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
    let router_port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
    let state_dir = repo_root().join(".moto");
    std::fs::create_dir_all(&state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
    // The script's own messages; moto's log is `.moto/moto-PORT.log`.
    let script_log = state_dir.join(format!("harness-{port}.log"));
    let moto_log = state_dir.join(format!("moto-{port}.log"));
    let log = File::create(&script_log).map_err(|e| format!("{}: {e}", script_log.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;

    // The script outlives nothing: it polls our PID and stops moto when we
    // are gone, so the Child handle can simply be dropped once moto is up.
    let mut child = Command::new(&script)
        .arg("run-with-parent")
        .arg(std::process::id().to_string())
        .arg(port.to_string())
        .env("MOTO_PORT", router_port.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", script.display()))?;

    let failure = |what: String| {
        format!(
            "moto on port {port}: {what}\n--- {} ---\n{}\n--- {} ---\n{}",
            script_log.display(),
            tail(&script_log, 20),
            moto_log.display(),
            tail(&moto_log, 30),
        )
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if answers(port) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failure(format!("the launcher exited early ({status})")));
        }
        if Instant::now() >= deadline {
            // The launcher stops moto on SIGTERM, so nothing is left behind.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            return Err(failure(format!("no answer within {READY_TIMEOUT:?}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
        router_port,
    })
}

/// A port nobody listens on right now. The kernel picks it; there is a short
/// window before moto binds it, which a failed start reports with moto's log.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Whether `GET /moto-api/` answers 200. A raw request keeps the harness
/// free of an HTTP client dependency; moto's dashboard is a static page.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status_line = String::new();
    match BufReader::new(stream).read_line(&mut status_line) {
        Ok(_) => status_line.starts_with("HTTP/1.") && status_line.split(' ').nth(1) == Some("200"),
        Err(_) => false,
    }
}

/// The last `lines` lines of a log file, for panic messages.
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// An S3 client for this binary's moto server, built by the library's own
/// factory so the tests exercise the settings the CLI uses.
pub async fn s3() -> Client {
    s3_at(&moto().endpoint).await
}

/// A client for the S3 endpoint at `endpoint` (moto, or a proxy before it).
pub async fn s3_at(endpoint: &str) -> Client {
    s3_fanout::base::client::build_s3_client(
        &s3_fanout::base::client::ClientSettings {
            endpoint_url: Some(endpoint.to_owned()),
            force_path_style: true,
            region: Some(REGION.into()),
            ..Default::default()
        },
        None,
    )
    .await
}

/// A bucket name no other call in this test binary gets:
/// `<tag>-<pid>-<n>`, lowercased, with anything S3 forbids turned into `-`.
/// The PID keeps names apart across binaries even if two shared a server.
pub fn unique_bucket(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let cleaned: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // 63 characters at most: leave room for `-<pid>-<n>` (up to 7 + 20 + 2).
    let cleaned: String = cleaned.chars().take(30).collect();
    let cleaned = cleaned.trim_matches('-');
    let tag = if cleaned.is_empty() { "t" } else { cleaned };
    format!("{tag}-{}-{n}", std::process::id())
}

/// `len` deterministic pseudo-random bytes (splitmix64): incompressible like
/// real data, and reproducible so a test can rebuild what it uploaded.
pub fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&fault_proxy::splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The bytes [`put_multipart`] uploads for `key`: [`body`] seeded by the key,
/// so two multipart objects in one test differ.
pub fn multipart_body(key: &str, total_size: usize) -> Vec<u8> {
    // FNV-1a: a stable hash, unlike std's randomly keyed one.
    let seed = key.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    body(seed, total_size)
}

pub async fn create_bucket(client: &Client, name: &str) {
    // No LocationConstraint: us-east-1 rejects one naming itself.
    if let Err(e) = client.create_bucket().bucket(name).send().await {
        panic!("create_bucket {name}: {}", DisplayErrorContext(e));
    }
}

/// Optional attributes for [`put_with`]. Tags are sent as the
/// `x-amz-tagging` query string, percent-encoded here.
#[derive(Debug, Clone, Default)]
pub struct PutExtras {
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    pub storage_class: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
}

/// Upload one object in a single PUT; returns its (quoted) ETag.
pub async fn put(client: &Client, bucket: &str, key: &str, body: Vec<u8>) -> String {
    put_with(client, bucket, key, body, PutExtras::default()).await
}

/// Upload one object with content type, metadata, tags, storage class and
/// headers; returns its (quoted) ETag.
pub async fn put_with(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    extras: PutExtras,
) -> String {
    let mut request = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .set_content_type(extras.content_type)
        .set_cache_control(extras.cache_control)
        .set_content_disposition(extras.content_disposition)
        .set_storage_class(extras.storage_class.as_deref().map(StorageClass::from));
    for (name, value) in extras.metadata {
        request = request.metadata(name, value);
    }
    if !extras.tags.is_empty() {
        request = request.tagging(tagging_query(&extras.tags));
    }
    match request.send().await {
        Ok(out) => out
            .e_tag
            .unwrap_or_else(|| panic!("put {bucket}/{key}: no ETag")),
        Err(e) => panic!("put {bucket}/{key}: {}", DisplayErrorContext(e)),
    }
}

fn tagging_query(tags: &[(String, String)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Upload `total_size` bytes of [`multipart_body`] as a real multipart upload
/// in `part_size` parts (the last one shorter); returns the (quoted) ETag,
/// which ends in `-N` for N parts. Parts below 5 MiB, except the last, are
/// refused by S3 and moto alike. A failed upload is aborted before the panic
/// so it does not linger in [`list_multipart_uploads`].
pub async fn put_multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    total_size: usize,
    part_size: usize,
) -> String {
    assert!(
        part_size > 0 && total_size > 0,
        "put_multipart needs data and a part size"
    );
    let data = multipart_body(key, total_size);
    let upload_id = match client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(out) => out
            .upload_id
            .expect("CreateMultipartUpload returned no upload id"),
        Err(e) => panic!(
            "create_multipart_upload {bucket}/{key}: {}",
            DisplayErrorContext(e)
        ),
    };

    let result: Result<String, String> = async {
        let mut parts = Vec::new();
        // Sequential on purpose: a few parts of test data, and a fixed order
        // keeps failures easy to read.
        for (i, chunk) in data.chunks(part_size).enumerate() {
            let number = i32::try_from(i + 1).map_err(|_| "too many parts".to_string())?;
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| format!("upload_part {number}: {}", DisplayErrorContext(e)))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag)
                    .part_number(number)
                    .build(),
            );
        }
        let count = parts.len();
        let out = client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| format!("complete_multipart_upload: {}", DisplayErrorContext(e)))?;
        let etag = out
            .e_tag
            .ok_or("CompleteMultipartUpload returned no ETag")?;
        let suffix = format!("-{count}");
        if !etag.trim_matches('"').ends_with(&suffix) {
            return Err(format!("ETag {etag} does not end in {suffix}"));
        }
        Ok(etag)
    }
    .await;

    match result {
        Ok(etag) => etag,
        Err(why) => {
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            panic!("put_multipart {bucket}/{key}: {why}");
        }
    }
}

/// One entry of a bucket listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Quoted, as S3 sends it.
    pub etag: String,
    /// As listed; moto reports `STANDARD` for plain objects.
    pub storage_class: Option<String>,
}

/// Key, size and ETag of every object, for comparing two buckets.
pub async fn contents(client: &Client, bucket: &str) -> Vec<(String, u64, String)> {
    list_all(client, bucket, "")
        .await
        .into_iter()
        .map(|l| (l.key, l.size, l.etag))
        .collect()
}

/// Every object under `prefix`, in listing (UTF-8 binary) order, across all
/// pages. No `encoding-type`: keys come back as stored, which is what the
/// tests compare with.
pub async fn list_all(client: &Client, bucket: &str, prefix: &str) -> Vec<Listed> {
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = match client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) => panic!("list {bucket}/{prefix}: {}", DisplayErrorContext(e)),
        };
        for object in page.contents() {
            listed.push(Listed {
                key: object.key().unwrap_or_default().to_owned(),
                size: object
                    .size()
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or_default(),
                etag: object.e_tag().unwrap_or_default().to_owned(),
                storage_class: object.storage_class().map(|c| c.as_str().to_owned()),
            });
        }
        match page.next_continuation_token {
            Some(next) if page.is_truncated == Some(true) => token = Some(next),
            _ => return listed,
        }
    }
}

pub async fn get_bytes(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) => panic!("get {bucket}/{key}: {}", DisplayErrorContext(e)),
    };
    match out.body.collect().await {
        Ok(data) => data.into_bytes().to_vec(),
        Err(e) => panic!("reading body of {bucket}/{key}: {e}"),
    }
}

pub async fn head(client: &Client, bucket: &str, key: &str) -> HeadObjectOutput {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) => panic!("head {bucket}/{key}: {}", DisplayErrorContext(e)),
    }
}

/// The object's tags, sorted by key then value.
pub async fn tags(client: &Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let out = match client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => panic!("get tags of {bucket}/{key}: {}", DisplayErrorContext(e)),
    };
    let mut tags: Vec<(String, String)> = out
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    tags.sort();
    tags
}

/// How many multipart uploads are in progress in `bucket`: a copy that
/// failed or was cancelled must leave none behind.
pub async fn list_multipart_uploads(client: &Client, bucket: &str) -> usize {
    let mut count = 0;
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = match client
            .list_multipart_uploads()
            .bucket(bucket)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(id_marker.take())
            .send()
            .await
        {
            Ok(page) => page,
            Err(e) => panic!(
                "list multipart uploads of {bucket}: {}",
                DisplayErrorContext(e)
            ),
        };
        count += page.uploads().len();
        if page.is_truncated != Some(true) {
            return count;
        }
        key_marker = page.next_key_marker;
        id_marker = page.next_upload_id_marker;
    }
}

/// The built CLI binary, with the test environment (credentials, no
/// `~/.aws`, `NO_COLOR=1`) but no flags: tests add `--endpoint-url` and the
/// rest themselves.
pub fn cli() -> Command {
    init_env();
    let mut command = Command::new(env!("CARGO_BIN_EXE_s3-fanout"));
    // Set explicitly as well as inherited, so the child's environment does
    // not depend on which helper ran first.
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    command
        .envs(TEST_ENV.iter().copied())
        .env("NO_COLOR", "1")
        .env("XDG_STATE_HOME", state_home())
        .stdin(Stdio::null());
    command
}

/// The CLI's state directory (ledgers of proven pairs) for this test
/// process: never the developer's own. Ledgers are named for their source
/// and destination, and tests use unique buckets, so they share it safely.
pub fn state_home() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("s3-fanout-test-state-")
            .tempdir()
            .expect("a temporary state directory")
    })
    .path()
}

/// What one CLI run produced.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Exit code; -1 when a signal ended the process.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panic with both streams unless the run exited 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.status, 0,
            "CLI failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Run the CLI with `args` and capture its output.
///
/// Both streams are also echoed through `println!`/`eprintln!`, which the
/// test runner captures and shows only for a failing test: the output is
/// there exactly when it is needed.
pub fn run_cli(args: &[&str]) -> CliOutput {
    let output = cli()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", env!("CARGO_BIN_EXE_s3-fanout")));
    let result = CliOutput {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!(
        "$ s3-fanout {}\n[exit {}]\n--- stdout ---\n{}",
        args.join(" "),
        result.status,
        result.stdout
    );
    eprintln!("--- stderr ---\n{}", result.stderr);
    result
}

/// Run `s3-fanout sync SRC DST --endpoint-url <moto> --json` plus `extra`
/// flags; returns the exit code and the parsed JSON summary.
pub fn sync_json(src: &str, dst: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let endpoint = moto().endpoint.clone();
    let mut args = vec!["sync", src, dst, "--endpoint-url", &endpoint, "--json"];
    args.extend_from_slice(extra);
    let out = run_cli(&args);
    let summary = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a JSON summary ({e}):\n{}\n{}",
            out.stdout, out.stderr
        )
    });
    (out.status, summary)
}

/// One of the summary's `counts`.
pub fn count(summary: &serde_json::Value, name: &str) -> u64 {
    summary["counts"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {name} in {summary}"))
}

/// Create a fresh, empty source and destination bucket named after `tag`.
pub async fn bucket_pair(client: &Client, tag: &str) -> (String, String) {
    let (src, dst) = (
        unique_bucket(&format!("{tag}-src")),
        unique_bucket(&format!("{tag}-dst")),
    );
    create_bucket(client, &src).await;
    create_bucket(client, &dst).await;
    (src, dst)
}
