//! CloudWatch Embedded Metric Format: metrics as structured log lines.
//!
//! A Lambda function prints one JSON object per line; CloudWatch Logs turns
//! the numbers the `_aws` directive names into metrics, so a dashboard or an
//! alarm needs no PutMetricData call, no extra permission and no extra
//! latency. See
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.
//!
//! Limits the format sets and [`MetricRecord::lines`] keeps: at most 100
//! metrics per directive and 100 values per metric. A distribution (one
//! value per replicated key, say) longer than that is spread over several
//! records, so CloudWatch still sees every value and can compute
//! percentiles from them.
//!
//! Every function reports through [`function_record`]: namespace
//! [`NAMESPACE`], one dimension set `[FunctionName]`, and the same seven
//! figures ([`Work`]), so one dashboard and one set of alarms cover them
//! all; each function adds its own figures after those. The names are a
//! contract with `infra/` (the dashboard and the alarms): rename none.
//!
//! [`emit`] is the one way out: bare JSON lines on stdout, which is what
//! Lambda ships to CloudWatch Logs. The functions' tracing logs are JSON
//! lines on stdout too, but an EMF record must be a line of its own, never
//! a field of a log event, so it does not go through tracing. A local stack
//! or a test points the process's sink at a file ([`log_to_file`]) or a
//! buffer ([`capture`]) instead.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

/// CloudWatch's units, the few this project reports in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// The format's limits.
const MAX_VALUES: usize = 100;
const MAX_METRICS: usize = 100;

/// One set of metrics sharing a namespace and dimensions.
#[derive(Debug, Clone)]
pub struct MetricRecord {
    namespace: String,
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, Unit, Vec<f64>)>,
    properties: Map<String, Value>,
}

impl MetricRecord {
    pub fn new(namespace: &str) -> Self {
        MetricRecord {
            namespace: namespace.to_owned(),
            dimensions: Vec::new(),
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    /// A dimension: metrics are aggregated per distinct value.
    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A metric with one value (a count, a sum).
    pub fn value(self, name: &str, unit: Unit, value: f64) -> Self {
        self.values(name, unit, vec![value])
    }

    /// A metric with many values (a distribution). No values: not reported,
    /// which CloudWatch treats as no data rather than as zero.
    pub fn values(mut self, name: &str, unit: Unit, values: Vec<f64>) -> Self {
        self.metrics.push((name.to_owned(), unit, values));
        self
    }

    /// A searchable field that is not a metric (a run id, a bucket).
    pub fn property(mut self, name: &str, value: Value) -> Self {
        self.properties.insert(name.to_owned(), value);
        self
    }

    /// The log lines, each one EMF record. `timestamp_ms`: milliseconds since
    /// the Unix epoch, the time the metrics are reported under.
    pub fn lines(&self, timestamp_ms: i64) -> Vec<String> {
        let metrics: Vec<&(String, Unit, Vec<f64>)> = self
            .metrics
            .iter()
            .filter(|(_, _, values)| !values.is_empty())
            .collect();
        let mut lines = Vec::new();
        for group in metrics.chunks(MAX_METRICS) {
            let longest = group.iter().map(|(_, _, v)| v.len()).max().unwrap_or(0);
            for chunk in 0..longest.div_ceil(MAX_VALUES) {
                let range = chunk * MAX_VALUES..(chunk + 1) * MAX_VALUES;
                let mut record = self.properties.clone();
                for (name, value) in &self.dimensions {
                    record.insert(name.clone(), json!(value));
                }
                let mut declared = Vec::new();
                for (name, unit, values) in group {
                    let Some(slice) = values.get(range.start..range.end.min(values.len())) else {
                        continue;
                    };
                    if slice.is_empty() {
                        continue;
                    }
                    declared.push(json!({"Name": name, "Unit": unit.as_str()}));
                    let value = match slice {
                        [one] => json!(one),
                        many => json!(many),
                    };
                    record.insert(name.clone(), value);
                }
                let dimension_names: Vec<&str> =
                    self.dimensions.iter().map(|(n, _)| n.as_str()).collect();
                record.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": self.namespace,
                            "Dimensions": [dimension_names],
                            "Metrics": declared,
                        }],
                    }),
                );
                lines.push(Value::Object(record).to_string());
            }
        }
        lines
    }
}

/// Check one line the way CloudWatch's parser reads it: a JSON object whose
/// `_aws` directive has a millisecond timestamp, and whose every declared
/// dimension (a string) and metric (a number, or at most 100 numbers) is a
/// top-level member. Returns the record.
pub fn validate_line(line: &str) -> Result<Value, String> {
    let record: Value =
        serde_json::from_str(line).map_err(|e| format!("not one JSON object: {e}"))?;
    let aws = &record["_aws"];
    if !aws["Timestamp"].is_i64() {
        return Err("_aws.Timestamp must be an integer (ms since the epoch)".into());
    }
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .ok_or("_aws.CloudWatchMetrics must be an array")?;
    for directive in directives {
        if directive["Namespace"].as_str().is_none_or(str::is_empty) {
            return Err("a directive without a Namespace".into());
        }
        let sets = directive["Dimensions"]
            .as_array()
            .ok_or("Dimensions must be an array of arrays")?;
        for set in sets {
            for name in set.as_array().ok_or("a dimension set must be an array")? {
                let name = name.as_str().ok_or("a dimension name must be a string")?;
                if !record[name].is_string() {
                    return Err(format!("dimension {name} needs a string member"));
                }
            }
        }
        let metrics = directive["Metrics"]
            .as_array()
            .ok_or("Metrics must be an array")?;
        if metrics.is_empty() || metrics.len() > MAX_METRICS {
            return Err(format!(
                "{} metrics in a directive (1 to 100)",
                metrics.len()
            ));
        }
        for metric in metrics {
            let name = metric["Name"].as_str().ok_or("a metric without a Name")?;
            match &record[name] {
                Value::Number(_) => {}
                Value::Array(values)
                    if values.len() <= MAX_VALUES && values.iter().all(Value::is_number) => {}
                other => {
                    return Err(format!(
                        "metric {name} must be a number or at most 100 numbers, got {other}"
                    ));
                }
            }
        }
    }
    Ok(record)
}

/// The CloudWatch namespace of every s3-fanout metric.
pub const NAMESPACE: &str = "s3-fanout";

/// What one invocation (for the copier: one batch) did to objects, and
/// what S3 made it repeat. Zero is a value: a function that runs and copies
/// nothing reports 0, so "no data" on the dashboard means "not running".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub objects_copied: u64,
    pub bytes_copied: u64,
    /// Objects deliberately not copied: already equal (lister), archived
    /// or SSE-C (copier, replicator).
    pub objects_skipped: u64,
    pub objects_failed: u64,
    /// Requests sent again after a failed attempt.
    pub retries: u64,
    /// Answers asking to slow down (503 SlowDown, 429).
    pub throttles: u64,
}

impl Work {
    /// The retries and throttles a request counter saw.
    pub fn requests(mut self, counter: &crate::base::metrics::RequestCounter) -> Self {
        self.retries = counter.retries();
        self.throttles = counter.throttled();
        self
    }
}

/// A function's record: its name as the one dimension, the common figures,
/// and `duration` as `BatchDuration`. Add the function's own figures and
/// properties (run id, batch id: searchable, never dimensions, which
/// would multiply the metrics CloudWatch bills) to it.
pub fn function_record(function_name: &str, work: &Work, duration: Duration) -> MetricRecord {
    let count = |n: u64| n as f64;
    MetricRecord::new(NAMESPACE)
        .dimension("FunctionName", function_name)
        .value("ObjectsCopied", Unit::Count, count(work.objects_copied))
        .value("BytesCopied", Unit::Bytes, count(work.bytes_copied))
        .value("ObjectsSkipped", Unit::Count, count(work.objects_skipped))
        .value("ObjectsFailed", Unit::Count, count(work.objects_failed))
        .value("Retries", Unit::Count, count(work.retries))
        .value("Throttles", Unit::Count, count(work.throttles))
        .value(
            "BatchDuration",
            Unit::Milliseconds,
            duration.as_micros() as f64 / 1000.0,
        )
}

/// The function's name for the `FunctionName` dimension: the one its
/// Lambda context carries (`AWS_LAMBDA_FUNCTION_NAME` on Lambda; the local
/// stack sets it), else the environment's, else `s3-fanout-<role>`.
pub fn function_name(from_context: &str, role: &str) -> String {
    if !from_context.is_empty() {
        return from_context.to_owned();
    }
    std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("s3-fanout-{role}"))
}

/// Milliseconds since the Unix epoch, as EMF timestamps are.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where this process's EMF lines go.
enum Sink {
    Stdout,
    File(File),
    Memory(Arc<Mutex<Vec<String>>>),
}

/// One per process, as stdout is: every function of a local stack shares
/// it, as every invocation of a Lambda container shares its log stream.
static SINK: Mutex<Sink> = Mutex::new(Sink::Stdout);

fn sink() -> std::sync::MutexGuard<'static, Sink> {
    // A panic while writing leaves a usable sink: it holds no invariant.
    SINK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Report `record` now.
pub fn emit(record: &MetricRecord) {
    write_lines(&record.lines(now_ms()));
}

/// Write EMF lines, already made, to the sink; each one whole, so lines
/// written at once by concurrent invocations never interleave.
pub fn write_lines(lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    let mut sink = sink();
    let written = match &mut *sink {
        // One write of whole lines under stdout's lock: the tracing
        // subscriber writes each of its lines whole too.
        Sink::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
        Sink::File(file) => file.write_all(text.as_bytes()),
        Sink::Memory(buffer) => {
            buffer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(lines.iter().cloned());
            Ok(())
        }
    };
    if let Err(err) = written {
        // Metrics are worth less than the work they describe: never fail it.
        tracing::warn!(error = %err, "could not write EMF metrics");
    }
}

/// From now on, append this process's EMF lines to `path` (created if
/// missing) instead of stdout: `s3-fanout local-stack --emf-log FILE`, and
/// the test stack, which keeps them beside the functions' logs.
pub fn log_to_file(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    *sink() = Sink::File(file);
    Ok(())
}

/// From now on, keep this process's EMF lines in memory; the returned
/// handle reads them.
pub fn capture() -> Captured {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    *sink() = Sink::Memory(buffer.clone());
    Captured { buffer }
}

/// From now on, print EMF lines on stdout again (the default).
pub fn log_to_stdout() {
    *sink() = Sink::Stdout;
}

/// EMF lines kept in memory by [`capture`].
#[derive(Debug, Clone)]
pub struct Captured {
    buffer: Arc<Mutex<Vec<String>>>,
}

impl Captured {
    /// Every line written since the capture started.
    pub fn lines(&self) -> Vec<String> {
        self.buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_valid_emf(line: &str) -> Value {
        validate_line(line).unwrap_or_else(|why| panic!("{why}: {line}"))
    }

    #[test]
    fn a_record_declares_its_metrics_and_dimensions() {
        let lines = MetricRecord::new("s3-fanout")
            .dimension("FunctionName", "stack-replicator")
            .value("Replicated", Unit::Count, 3.0)
            .value("Failed", Unit::Count, 0.0)
            .values("ReplicationLag", Unit::Milliseconds, vec![12.0, 40.0])
            .values("Unused", Unit::Count, vec![])
            .property("source", json!("s3://a/"))
            .lines(1_700_000_000_000);
        assert_eq!(lines.len(), 1);
        let record = assert_valid_emf(&lines[0]);
        assert_eq!(record["Replicated"], json!(3.0));
        assert_eq!(record["ReplicationLag"], json!([12.0, 40.0]));
        assert_eq!(record["FunctionName"], "stack-replicator");
        assert_eq!(record["source"], "s3://a/");
        assert!(record.get("Unused").is_none());
        let names: Vec<&str> = record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Replicated", "Failed", "ReplicationLag"]);
    }

    #[test]
    fn a_long_distribution_is_spread_over_records_of_at_most_100_values() {
        let lag: Vec<f64> = (0..250).map(f64::from).collect();
        let lines = MetricRecord::new("s3-fanout")
            .dimension("FunctionName", "f")
            .value("Replicated", Unit::Count, 250.0)
            .values("ReplicationLag", Unit::Milliseconds, lag.clone())
            .lines(0);
        assert_eq!(lines.len(), 3);
        let mut seen = Vec::new();
        let mut counted = 0.0;
        for line in &lines {
            let record = assert_valid_emf(line);
            counted += record["Replicated"].as_f64().unwrap_or(0.0);
            match &record["ReplicationLag"] {
                Value::Array(values) => seen.extend(values.iter().map(|v| v.as_f64().unwrap())),
                Value::Number(n) => seen.push(n.as_f64().unwrap()),
                _ => panic!("lag missing"),
            }
        }
        assert_eq!(seen, lag, "every value reported once");
        assert_eq!(counted, 250.0, "a count is reported once, not per record");
    }

    #[test]
    fn a_function_record_carries_the_common_figures_under_one_dimension() {
        let work = Work {
            objects_copied: 3,
            bytes_copied: 300,
            objects_skipped: 1,
            objects_failed: 2,
            retries: 4,
            throttles: 5,
        };
        let lines = function_record("stack-copier", &work, Duration::from_millis(1500))
            .value("ObjectsDeleted", Unit::Count, 0.0)
            .property("run_id", json!("r1"))
            .lines(7);
        assert_eq!(lines.len(), 1);
        let record = assert_valid_emf(&lines[0]);
        let directive = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(record["FunctionName"], "stack-copier");
        for (name, value) in [
            ("ObjectsCopied", 3.0),
            ("BytesCopied", 300.0),
            ("ObjectsSkipped", 1.0),
            ("ObjectsFailed", 2.0),
            ("Retries", 4.0),
            ("Throttles", 5.0),
            ("BatchDuration", 1500.0),
            ("ObjectsDeleted", 0.0),
        ] {
            assert_eq!(record[name], json!(value), "{name}");
        }
        let unit = |name: &str| {
            directive["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["Name"] == name)
                .map(|m| m["Unit"].clone())
        };
        assert_eq!(unit("BytesCopied"), Some(json!("Bytes")));
        assert_eq!(unit("BatchDuration"), Some(json!("Milliseconds")));
        assert_eq!(record["run_id"], "r1", "a property, not a dimension");
    }

    #[test]
    fn the_function_name_falls_back_to_the_role_without_a_context() {
        assert_eq!(function_name("stack-lister", "lister"), "stack-lister");
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_none() {
            assert_eq!(function_name("", "lister"), "s3-fanout-lister");
        }
    }

    /// The sink is the process's: the tests that switch it take turns.
    static SINK_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn emitted_lines_reach_a_captured_buffer_and_a_file_whole() {
        let _turn = SINK_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let record = |n: f64| {
            function_record("sink-test", &Work::default(), Duration::ZERO).value(
                "Marker",
                Unit::Count,
                n,
            )
        };
        let captured = capture();
        emit(&record(1.0));
        emit(&record(2.0));
        let mine: Vec<Value> = captured
            .lines()
            .iter()
            .map(|l| assert_valid_emf(l))
            .filter(|r| r["FunctionName"] == "sink-test")
            .collect();
        assert_eq!(mine.len(), 2);
        assert_eq!(mine[1]["Marker"], json!(2.0));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emf.log");
        log_to_file(&path).unwrap();
        emit(&record(3.0));
        log_to_stdout();
        let text = std::fs::read_to_string(&path).unwrap();
        let mine: Vec<Value> = text
            .lines()
            .map(assert_valid_emf)
            .filter(|r| r["FunctionName"] == "sink-test")
            .collect();
        assert_eq!(mine.len(), 1, "{text}");
        assert_eq!(mine[0]["Marker"], json!(3.0));
        let in_buffer = captured
            .lines()
            .iter()
            .filter(|l| l.contains("sink-test"))
            .count();
        assert_eq!(in_buffer, 2, "the buffer no longer receives");
    }
}
