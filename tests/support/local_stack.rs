//! The serverless stack of a test binary: moto's Step Functions running the
//! real state machine, the Lambda router and the event source emulator
//! (`s3_fanout::local_stack`), with the functions' S3 and SQS traffic going through
//! a fault-injecting proxy so tests can make chosen keys fail.
//!
//! The stack runs on its own thread and runtime, because `#[tokio::test]`
//! runtimes end with their test and the stack serves every test of the binary.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use s3_fanout::local_stack::event_source::CopierCrashes;
use s3_fanout::local_stack::{LocalStackOptions, start};
use s3_fanout::serverless::FunctionEnv;
use s3_fanout::serverless::control::StackOutputs;

use super::fault_proxy::FaultProxy;
use super::{init_env, moto, run_cli};

pub struct TestStack {
    pub outputs: StackOutputs,
    /// For `--stack-outputs`.
    pub outputs_file: PathBuf,
    /// Between the functions and moto's S3.
    pub proxy: FaultProxy,
    /// The functions' own environment, for handler-level tests.
    pub env: Arc<FunctionEnv>,
    /// Kills the stack's copier invocations like a crashed Lambda process.
    pub crashes: CopierCrashes,
    /// The functions' CloudWatch metrics, one EMF record a line.
    pub emf_log: PathBuf,
    pub runtime: tokio::runtime::Handle,
    _dir: tempfile::TempDir,
}

/// Small numbers so every path is exercised in seconds: shards loop on the
/// lister's cursor (few keys per invocation), handed-back batches reappear
/// after 6 s, and the third receive is the last.
pub const LISTER_MAX_KEYS: u64 = 7;
pub const MAX_RECEIVE_COUNT: u32 = 3;

/// Executions take turns: each run already lists shards in parallel and
/// copies through several copier invocations, and on 2 cores a second run
/// at the same time only makes both slower and their timings harder to read.
pub fn one_run_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn stack() -> &'static TestStack {
    stack_with(|_| {})
}

/// [`stack`], with `configure` applied to its options (a run notification
/// topic, say). A test binary has one stack: the first call builds it, and
/// every later call, of either function, returns that one.
pub fn stack_with(configure: impl FnOnce(&mut LocalStackOptions)) -> &'static TestStack {
    static STACK: OnceLock<TestStack> = OnceLock::new();
    STACK.get_or_init(|| {
        init_env();
        // The functions' logs, kept for post-mortems next to moto's.
        let log_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".moto");
        let _ = std::fs::create_dir_all(&log_dir);
        // Their metrics too, rather than on the test's stdout.
        let emf_log = log_dir.join(format!("emf-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&emf_log);
        s3_fanout::report::emf::log_to_file(&emf_log).expect("the EMF log opens");
        if let Ok(file) =
            std::fs::File::create(log_dir.join(format!("functions-{}.log", std::process::id())))
        {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("s3_fanout=debug"))
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .try_init();
        }
        let moto = moto();
        let proxy = FaultProxy::start(&moto.endpoint);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut options =
            LocalStackOptions::new(&moto.endpoint, ([127, 0, 0, 1], moto.router_port).into());
        options.functions_endpoint = Some(proxy.endpoint().to_owned());
        options.lister_max_keys = Some(LISTER_MAX_KEYS);
        // A test replicates and runs within seconds: the replicator's
        // journal is folded at once.
        options.journal_settle_secs = Some(0);
        options.max_receive_count = MAX_RECEIVE_COUNT;
        // SQS delivers at least once: deliver every batch twice, so every
        // count asserted below also proves a redelivery counts nothing twice.
        options.duplicate_deliveries = true;
        // Objects above 12 MiB are copied by part tasks.
        options.split_object_bytes = Some(12 * 1024 * 1024);
        // One SDK retry per receive: handed-back batches are what is tested.
        options.function_max_attempts = Some(2);
        configure(&mut options);
        std::thread::Builder::new()
            .name("local-stack".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("stack runtime");
                let handle = runtime.handle().clone();
                runtime.block_on(async move {
                    let stack = start(options).await;
                    let started = match &stack {
                        Ok(s) => Ok((s.outputs.clone(), s.env.clone(), s.crashes.clone())),
                        Err(e) => Err(e.to_string()),
                    };
                    tx.send((started, handle)).expect("the test waits");
                    // Serve until the test binary exits (dropping the stack
                    // would stop it).
                    let _stack = stack;
                    std::future::pending::<()>().await;
                });
            })
            .expect("spawn the stack thread");
        let (started, runtime) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the local stack starts within a minute");
        let (outputs, env, crashes) =
            started.unwrap_or_else(|why| panic!("the local stack did not start: {why}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let outputs_file = dir.path().join("outputs.json");
        std::fs::write(&outputs_file, serde_json::to_vec(&outputs).unwrap()).unwrap();
        TestStack {
            outputs,
            outputs_file,
            proxy,
            env,
            crashes,
            emf_log,
            runtime,
            _dir: dir,
        }
    })
}

/// `s3-fanout status --json RUN` against the test stack.
pub fn status_json(run_id: &str) -> serde_json::Value {
    let outputs = stack().outputs_file.display().to_string();
    let out = run_cli(&["status", "--stack-outputs", &outputs, "--json", run_id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).expect("status prints JSON")
}
