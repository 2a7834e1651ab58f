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
}
