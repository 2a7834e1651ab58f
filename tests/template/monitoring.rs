//! Monitoring: the CloudWatch dashboards and the alarms on runs and
//! replication.
//!
//! A dashboard body is a `!Sub` of JSON, so a typo in a metric name, a
//! dimension or a bracket only shows when CloudFormation rejects it, or
//! worse, as an empty graph. The checks substitute it as CloudFormation
//! would, parse it, and hold every metric it names to what exists: the
//! functions' EMF metrics ([`EMITTED`], the contract with `src/report/emf.rs`) or
//! AWS's own, on a resource of this stack that the same parameters deploy.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde_json::Value;

use crate::Check;
use crate::conditions::parameter_sets;
use crate::eval::{Params, params};
use crate::model::{COPIER, REPLICATOR, Template, repo};
use crate::values::{number, one_or_many, ref_name, scalar};

/// The functions' metrics namespace (`emf::NAMESPACE`).
pub const NAMESPACE: &str = "s3-fanout";

/// What every function reports per invocation (`emf::function_record`).
pub const COMMON: [&str; 7] = [
    "ObjectsCopied",
    "BytesCopied",
    "ObjectsSkipped",
    "ObjectsFailed",
    "Retries",
    "Throttles",
    "BatchDuration",
];

/// Each function's own metrics, besides [`COMMON`], by binary.
pub const EMITTED: [(&str, &[&str]); 5] = [
    ("s3-fanout-planner", &[]),
    (
        "s3-fanout-lister",
        &["ObjectsListed", "BatchesSent", "SendTime", "CheckpointTime"],
    ),
    (
        "s3-fanout-copier",
        &[
            "BatchQueueTime",
            "BatchCopyTime",
            "BatchResultTime",
            "BatchHandoffTime",
        ],
    ),
    ("s3-fanout-reporter", &["BatchesSent", "BatchesDone"]),
    (
        "s3-fanout-replicator",
        &[
            "Replicated",
            "Deleted",
            "Failed",
            "Skipped",
            "InSync",
            "Ignored",
            "BytesReplicated",
            "ReplicationLag",
        ],
    ),
];

/// The AWS metrics a dashboard may show, by namespace: the metric names
/// and the one dimension each is read by.
const AWS_METRICS: [(&str, &str, &[&str]); 3] = [
    (
        "AWS/States",
        "StateMachineArn",
        &[
            "ExecutionsStarted",
            "ExecutionsSucceeded",
            "ExecutionsFailed",
            "ExecutionsTimedOut",
            "ExecutionsAborted",
            "ExecutionThrottled",
            "ExecutionTime",
        ],
    ),
    (
        "AWS/SQS",
        "QueueName",
        &[
            "ApproximateNumberOfMessagesVisible",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateAgeOfOldestMessage",
            "NumberOfMessagesSent",
            "NumberOfMessagesReceived",
            "NumberOfMessagesDeleted",
        ],
    ),
    (
        "AWS/Lambda",
        "FunctionName",
        &[
            "Invocations",
            "Errors",
            "Throttles",
            "ConcurrentExecutions",
            "Duration",
        ],
    ),
];

/// What the pseudo parameters stand for in a substituted body.
const REGION: &str = "us-east-1";

/// The metrics of `binary`, common and own.
pub fn emitted(binary: &str) -> Vec<&'static str> {
    let own = EMITTED
        .iter()
        .find(|(b, _)| *b == binary)
        .map(|(_, m)| m.to_vec())
        .unwrap_or_default();
    COMMON.iter().copied().chain(own).collect()
}

/// The contract is the code's: each common metric name is a string in
/// `src/report/emf.rs` (where `function_record` writes them), each function's own
/// in its handler's file, `src/serverless/<role>.rs`.
pub fn check_metric_contract_in_source() -> Check {
    let read = |path: &str| {
        fs::read_to_string(repo().join(path)).map_err(|e| format!("cannot read {path}: {e}"))
    };
    let emf = read("src/report/emf.rs")?;
    for name in COMMON {
        ensure!(
            emf.contains(&format!("\"{name}\"")),
            "src/report/emf.rs does not write the common metric {name}"
        );
    }
    for (binary, own) in EMITTED {
        let role = binary.trim_start_matches("s3-fanout-");
        let path = format!("src/serverless/{role}.rs");
        let source = read(&path)?;
        for name in own {
            ensure!(
                source.contains(&format!("\"{name}\"")),
                "{path} does not write the metric {name} the dashboards expect of {binary}"
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------- dashboards

/// A `Fn::Sub` text as CloudFormation would make it for `p`: parameters by
/// their values, pseudo parameters by examples, and resources by a marker
/// naming them, `<Ref X>` or `<GetAtt X.Attribute>`. A resource that `p`
/// does not deploy is an error, as CloudFormation would make it.
pub fn substitute(t: &Template, text: &str, p: &Params) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {after:.40}"))?;
        let name = &after[..end];
        rest = &after[end + 1..];
        if let Some(literal) = name.strip_prefix('!') {
            out.push_str(&format!("${{{literal}}}"));
            continue;
        }
        let value = match name {
            "AWS::Region" => REGION.to_string(),
            "AWS::StackName" => "stack".to_string(),
            "AWS::AccountId" => "123456789012".to_string(),
            "AWS::Partition" => "aws".to_string(),
            // A parameter without a default (a bucket name) stands for
            // itself, lowercased: a value its pattern would allow.
            _ if t.is_parameter(name) => scalar(&t.eval(&serde_json::json!({ "Ref": name }), p))
                .unwrap_or_else(|| name.to_lowercase()),
            _ => {
                let (resource, marker) = match name.split_once('.') {
                    Some((r, attribute)) => (r, format!("<GetAtt {r}.{attribute}>")),
                    None => (name, format!("<Ref {name}>")),
                };
                ensure!(
                    t.resource_deployed(resource, p),
                    "${{{name}}}: {resource} is not deployed with {p:?}"
                );
                marker
            }
        };
        out.push_str(&value);
    }
    out.push_str(rest);
    Ok(out)
}

/// One metric a dashboard graph draws.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Drawn {
    pub namespace: String,
    pub metric: String,
    /// The resource of its one dimension (a `<Ref X>` or `<GetAtt X.A>`).
    pub resource: String,
    pub stat: String,
}

/// A deployed dashboard's body, substituted and parsed.
pub fn dashboard_body(t: &Template, id: &str, p: &Params) -> Result<Value, String> {
    let body = t.props(&t.resources()[id]).get("DashboardBody");
    let text = body
        .and_then(|b| b.get("Fn::Sub"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{id}'s DashboardBody must be a !Sub of a JSON string"))?;
    let substituted = substitute(t, text, p).map_err(|e| format!("{id}: {e}"))?;
    serde_json::from_str(&substituted).map_err(|e| {
        let line = substituted
            .lines()
            .nth(e.line().saturating_sub(1))
            .unwrap_or_default();
        format!("{id}'s DashboardBody is not JSON once substituted: {e}\n{line}")
    })
}

/// The resource id in a `<Ref X>` or `<GetAtt X.A>` marker, with the
/// attribute (`None` for a Ref).
fn marked(value: &str) -> Option<(&str, Option<&str>)> {
    if let Some(name) = value
        .strip_prefix("<Ref ")
        .and_then(|r| r.strip_suffix('>'))
    {
        return Some((name, None));
    }
    let inner = value.strip_prefix("<GetAtt ")?.strip_suffix('>')?;
    let (resource, attribute) = inner.split_once('.')?;
    Some((resource, Some(attribute)))
}

fn is_statistic(stat: &str) -> bool {
    matches!(
        stat,
        "Sum" | "Maximum" | "Minimum" | "Average" | "SampleCount"
    ) || stat
        .strip_prefix('p')
        .is_some_and(|n| n.parse::<f64>().is_ok_and(|x| (0.0..=100.0).contains(&x)))
}

/// Checks one dashboard and returns the metrics it draws: every widget
/// inside the 24-column grid without overlapping another; every metric a
/// real one with its one right dimension on a deployed resource, in this
/// stack's region, with a valid statistic; every expression over metrics of
/// its own graph; every alarm shown one of this stack's.
pub fn check_dashboard(t: &Template, id: &str, p: &Params) -> Result<Vec<Drawn>, String> {
    let body = dashboard_body(t, id, p)?;
    let widgets = body
        .get("widgets")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{id} has no widgets"))?;
    let mut drawn = Vec::new();
    let mut cells = BTreeMap::new();
    for (n, widget) in widgets.iter().enumerate() {
        let title = widget
            .pointer("/properties/title")
            .and_then(Value::as_str)
            .unwrap_or("(untitled)");
        let at = |key: &str| widget.get(key).and_then(Value::as_u64);
        let (Some(x), Some(y), Some(w), Some(h)) = (at("x"), at("y"), at("width"), at("height"))
        else {
            return Err(format!(
                "{id} widget {n} ({title}) needs x, y, width and height"
            ));
        };
        ensure!(
            x + w <= 24,
            "{id} widget {n} ({title}) runs past the 24-column grid"
        );
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            if let Some(other) = cells.insert(cell, n) {
                return Err(format!("{id} widgets {other} and {n} ({title}) overlap"));
            }
        }
        let properties = widget.get("properties").unwrap_or(&Value::Null);
        match widget.get("type").and_then(Value::as_str) {
            Some("text") => {
                ensure!(
                    properties.get("markdown").and_then(Value::as_str).is_some(),
                    "{id} text widget {n} has no markdown"
                );
            }
            Some("alarm") => {
                let alarms = properties
                    .get("alarms")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("{id} alarm widget {n} lists no alarms"))?;
                for alarm in alarms {
                    let arn = alarm.as_str().unwrap_or_default();
                    ensure!(
                        matches!(marked(arn), Some((a, Some("Arn"))) if t.resource_type(a) == Some("AWS::CloudWatch::Alarm")),
                        "{id} alarm widget {n} shows {arn}, not an alarm of this stack"
                    );
                }
            }
            Some("metric") => {
                ensure!(
                    properties.get("region").and_then(Value::as_str) == Some(REGION),
                    "{id} widget {n} ({title}) must set region to ${{AWS::Region}}"
                );
                drawn.extend(metric_rows(t, id, n, title, properties, p)?);
            }
            other => return Err(format!("{id} widget {n} has unexpected type {other:?}")),
        }
    }
    Ok(drawn)
}

/// The metrics of one graph, each checked.
fn metric_rows(
    t: &Template,
    id: &str,
    n: usize,
    title: &str,
    properties: &Value,
    p: &Params,
) -> Result<Vec<Drawn>, String> {
    let rows = properties
        .get("metrics")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("{id} widget {n} ({title}) has no metrics"))?;
    let widget_stat = properties.get("stat").and_then(Value::as_str);
    let mut ids = BTreeSet::new();
    let mut expressions = Vec::new();
    let mut drawn = Vec::new();
    for row in rows {
        let items = row
            .as_array()
            .ok_or_else(|| format!("{id} widget {n} ({title}): a metric row is not an array"))?;
        let options = items.last().filter(|o| o.is_object());
        let option = |key: &str| options.and_then(|o| o.get(key)).and_then(Value::as_str);
        if let Some(identifier) = option("id") {
            ids.insert(identifier.to_string());
        }
        if let Some(expression) = option("expression") {
            ensure!(
                items.len() == 1,
                "{id} widget {n} ({title}): an expression row holds only its options"
            );
            expressions.push(expression.to_string());
            continue;
        }
        let strings: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
        ensure!(
            strings.len() == items.len() - usize::from(options.is_some()),
            "{id} widget {n} ({title}): metric row {row} mixes values"
        );
        ensure!(
            !strings.contains(&"."),
            "{id} widget {n} ({title}): write metric rows in full, not with \".\" (row {row})"
        );
        let [namespace, metric, dimension, value] = strings[..] else {
            return Err(format!(
                "{id} widget {n} ({title}): metric row {row} must be [namespace, metric, dimension, value, options?]"
            ));
        };
        let stat = option("stat")
            .or(widget_stat)
            .unwrap_or("Average")
            .to_string();
        ensure!(
            is_statistic(&stat),
            "{id} widget {n} ({title}): {stat} is not a statistic"
        );
        let resource = check_metric(t, namespace, metric, dimension, value, p)
            .map_err(|e| format!("{id} widget {n} ({title}): {e}"))?;
        drawn.push(Drawn {
            namespace: namespace.into(),
            metric: metric.into(),
            resource,
            stat,
        });
    }
    for expression in expressions {
        let words = expression
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()));
        for word in words {
            ensure!(
                ids.contains(word),
                "{id} widget {n} ({title}): expression {expression:?} uses {word}, no metric id of this graph"
            );
        }
    }
    Ok(drawn)
}

/// A metric and its dimension exist: a function's EMF metric by its
/// FunctionName, or AWS's by the dimension it publishes it with, on a
/// resource of the right type. Returns the resource's id.
fn check_metric(
    t: &Template,
    namespace: &str,
    metric: &str,
    dimension: &str,
    value: &str,
    p: &Params,
) -> Result<String, String> {
    let (resource, attribute) = marked(value)
        .ok_or_else(|| format!("{metric}'s {dimension} {value} is not a resource of this stack"))?;
    ensure!(
        t.resource_deployed(resource, p),
        "{metric} is on {resource}, not deployed with {p:?}"
    );
    let ty = t.resource_type(resource).unwrap_or_default();
    let binary = t.resources()[resource]
        .pointer("/Metadata/BuildProperties/Binary")
        .and_then(Value::as_str);
    if namespace == NAMESPACE {
        ensure!(
            dimension == "FunctionName" && attribute.is_none(),
            "{NAMESPACE} metrics have one dimension, FunctionName (the function's Ref): {metric} has {dimension} {value}"
        );
        let binary = binary
            .ok_or_else(|| format!("{metric} is on {resource}, not a function of this stack"))?;
        ensure!(
            emitted(binary).contains(&metric),
            "{resource} ({binary}) emits no metric {metric}"
        );
        return Ok(resource.to_string());
    }
    let (_, name, metrics) = AWS_METRICS
        .iter()
        .find(|(ns, _, _)| *ns == namespace)
        .ok_or_else(|| {
            format!("namespace {namespace} is neither {NAMESPACE} nor a known AWS one")
        })?;
    ensure!(
        metrics.contains(&metric),
        "{namespace} has no metric {metric} this check knows"
    );
    ensure!(
        dimension == *name,
        "{namespace} {metric} is read by {name}, not {dimension}"
    );
    let right = match (namespace, attribute) {
        ("AWS/States", None) => ty == "AWS::Serverless::StateMachine",
        ("AWS/SQS", Some("QueueName")) => ty == "AWS::SQS::Queue",
        ("AWS/Lambda", None) => ty == "AWS::Serverless::Function",
        _ => false,
    };
    ensure!(
        right,
        "{namespace} {metric}'s {dimension} is {value}, not the right attribute of the right resource"
    );
    Ok(resource.to_string())
}

/// What a required graph line is: (namespace, metric, resource, stat).
type Want = (&'static str, &'static str, String, &'static str);

fn want_function(
    t: &Template,
    binary: &str,
    metrics: &[(&'static str, &'static str)],
) -> Result<Vec<Want>, String> {
    let (id, _) = t.function(binary)?;
    Ok(metrics
        .iter()
        .map(|(m, s)| (NAMESPACE, *m, id.to_string(), *s))
        .collect())
}

/// What operators need to see of a run.
fn run_wants(t: &Template) -> Result<Vec<Want>, String> {
    let mut wants = want_function(
        t,
        COPIER,
        &[
            ("ObjectsCopied", "Sum"),
            ("BytesCopied", "Sum"),
            ("ObjectsFailed", "Sum"),
            ("ObjectsSkipped", "Sum"),
            ("Retries", "Sum"),
            ("Throttles", "Sum"),
            ("BatchDuration", "p50"),
            ("BatchDuration", "p99"),
        ],
    )?;
    wants.extend(want_function(
        t,
        "s3-fanout-lister",
        &[
            ("ObjectsListed", "Sum"),
            ("BatchesSent", "Sum"),
            ("ObjectsFailed", "Sum"),
            ("ObjectsSkipped", "Sum"),
            ("Retries", "Sum"),
            ("Throttles", "Sum"),
            ("BatchDuration", "p50"),
            ("BatchDuration", "p99"),
        ],
    )?);
    let (copier, _) = t.function(COPIER)?;
    for (metric, stat) in [
        ("Errors", "Sum"),
        ("Throttles", "Sum"),
        ("ConcurrentExecutions", "Maximum"),
    ] {
        wants.push(("AWS/Lambda", metric, copier.to_string(), stat));
    }
    let (work, _) = t.work_queue()?;
    let (dlq, _) = t.dead_letter_queue()?;
    wants.push((
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        work.into(),
        "Maximum",
    ));
    wants.push((
        "AWS/SQS",
        "ApproximateNumberOfMessagesNotVisible",
        work.into(),
        "Maximum",
    ));
    wants.push((
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        dlq.into(),
        "Maximum",
    ));
    let machine = state_machine(t)?;
    for metric in [
        "ExecutionsStarted",
        "ExecutionsSucceeded",
        "ExecutionsFailed",
        "ExecutionsTimedOut",
        "ExecutionsAborted",
    ] {
        wants.push(("AWS/States", metric, machine.clone(), "Sum"));
    }
    Ok(wants)
}

/// What operators need to see of replication.
fn replication_wants(t: &Template) -> Result<Vec<Want>, String> {
    let mut wants = want_function(
        t,
        REPLICATOR,
        &[
            ("ReplicationLag", "p50"),
            ("ReplicationLag", "p99"),
            ("ReplicationLag", "Maximum"),
            ("Replicated", "Sum"),
            ("Failed", "Sum"),
        ],
    )?;
    let (events, _) = t.event_queue()?;
    let (dlq, _) = t.dead_letter_queue_of(events)?;
    wants.push((
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        events.into(),
        "Maximum",
    ));
    wants.push((
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        dlq.into(),
        "Maximum",
    ));
    Ok(wants)
}

fn state_machine(t: &Template) -> Result<String, String> {
    let machines = t.of_type("AWS::Serverless::StateMachine");
    ensure!(machines.len() == 1, "expected one state machine");
    Ok(machines[0].0.to_string())
}

/// Every dashboard each parameter set deploys is valid (see
/// [`check_dashboard`]); together they draw what [`run_wants`] lists, and
/// with Replication=true what [`replication_wants`] lists too.
pub fn check_dashboards(t: &Template) -> Check {
    ensure!(
        !t.of_type("AWS::CloudWatch::Dashboard").is_empty(),
        "no AWS::CloudWatch::Dashboard"
    );
    for p in parameter_sets() {
        let mut drawn = BTreeSet::new();
        for (id, dashboard) in t.of_type("AWS::CloudWatch::Dashboard") {
            if t.is_deployed(dashboard, &p) {
                drawn.extend(check_dashboard(t, id, &p)?);
            }
        }
        let mut wants = run_wants(t)?;
        if t.condition("ReplicationEnabled", &p) {
            wants.extend(replication_wants(t)?);
        }
        for (namespace, metric, resource, stat) in wants {
            ensure!(
                drawn.iter().any(|d| d.namespace == namespace
                    && d.metric == metric
                    && d.resource == resource
                    && d.stat == stat),
                "with {p:?}, no dashboard draws {namespace} {metric} ({stat}) of {resource}"
            );
        }
    }
    Ok(())
}

// ----------------------------------------------------------------- alarms

/// A metric an alarm reads: (namespace, metric, dimensions, statistic),
/// from its own properties or the `MetricStat` of each `Metrics` entry.
pub struct AlarmMetric {
    pub id: Option<String>,
    pub namespace: String,
    pub metric: String,
    pub dimensions: Vec<(String, Value)>,
    pub stat: Option<String>,
}

pub fn alarm_metrics(t: &Template, alarm: &Value) -> Vec<AlarmMetric> {
    let p = t.props(alarm);
    let read = |m: &Value, id: Option<String>, stat: Option<String>| AlarmMetric {
        id,
        namespace: m.get("Namespace").and_then(scalar).unwrap_or_default(),
        metric: m.get("MetricName").and_then(scalar).unwrap_or_default(),
        dimensions: m
            .get("Dimensions")
            .map(one_or_many)
            .unwrap_or_default()
            .into_iter()
            .map(|d| {
                (
                    d.get("Name").and_then(scalar).unwrap_or_default(),
                    d.get("Value").cloned().unwrap_or(Value::Null),
                )
            })
            .collect(),
        stat,
    };
    if let Some(entries) = p.get("Metrics").and_then(Value::as_array) {
        return entries
            .iter()
            .filter_map(|e| {
                let stat = e.get("MetricStat")?;
                Some(read(
                    stat.get("Metric")?,
                    e.get("Id").and_then(scalar),
                    stat.get("Stat").and_then(scalar),
                ))
            })
            .collect();
    }
    let stat = p
        .get("ExtendedStatistic")
        .or_else(|| p.get("Statistic"))
        .and_then(scalar);
    vec![read(p, None, stat)]
}

/// A value CloudFormation would make of `value` with `p`, `Fn::Join`
/// included (which [`Template::eval`] leaves as written).
pub fn eval_scalar(t: &Template, value: &Value, p: &Params) -> Option<String> {
    if let Some(args) = value.get("Fn::Join").and_then(Value::as_array) {
        let separator = args.first().and_then(Value::as_str)?;
        let parts: Option<Vec<String>> = args
            .get(1)?
            .as_array()?
            .iter()
            .map(|v| eval_scalar(t, v, p))
            .collect();
        return Some(parts?.join(separator));
    }
    scalar(&t.eval(value, p))
}

/// Alarms fire on the threshold given: (operator, threshold) says "above x".
fn fires_above(t: &Template, alarm: &Value, p: &Params) -> Option<f64> {
    let props = t.props(alarm);
    let threshold =
        eval_scalar(t, props.get("Threshold")?, p).and_then(|s| number(&Value::String(s)))?;
    match props.get("ComparisonOperator").and_then(Value::as_str)? {
        "GreaterThanThreshold" => Some(threshold),
        _ => None,
    }
}

/// The alarms of the template whose metrics include `namespace` `metric`.
fn alarms_on<'a>(t: &'a Template, namespace: &str, metric: &str) -> Vec<(&'a str, &'a Value)> {
    t.of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, a)| {
            alarm_metrics(t, a)
                .iter()
                .any(|m| m.namespace == namespace && m.metric == metric)
        })
        .collect()
}

/// A run that fails raises an alarm: one alarm, always deployed, reads
/// AWS/States ExecutionsFailed (Sum) of this stack's state machine and
/// fires on one failed execution; with metric math, the expression it
/// returns uses that metric (and ExecutionsTimedOut, if read, the same
/// way); no data is healthy.
pub fn check_run_failed_alarm(t: &Template) -> Check {
    let machine = state_machine(t)?;
    let alarms = alarms_on(t, "AWS/States", "ExecutionsFailed");
    ensure!(
        alarms.len() == 1,
        "expected one alarm on AWS/States ExecutionsFailed, found {}",
        alarms.len()
    );
    let (id, alarm) = alarms[0];
    ensure!(
        alarm.get("Condition").is_none(),
        "{id} must be deployed whatever the parameters"
    );
    let metrics = alarm_metrics(t, alarm);
    for m in metrics.iter().filter(|m| m.namespace == "AWS/States") {
        ensure!(
            m.metric == "ExecutionsFailed" || m.metric == "ExecutionsTimedOut",
            "{id} reads {}, which is no failure",
            m.metric
        );
        ensure!(
            m.dimensions.len() == 1
                && m.dimensions[0].0 == "StateMachineArn"
                && ref_name(&m.dimensions[0].1) == Some(machine.as_str()),
            "{id}'s {} must have the one dimension StateMachineArn = !Ref {machine}",
            m.metric
        );
        ensure!(
            m.stat.as_deref() == Some("Sum"),
            "{id} must count executions with Sum, has {:?}",
            m.stat
        );
    }
    let props = t.props(alarm);
    if let Some(entries) = props.get("Metrics").and_then(Value::as_array) {
        let returned: Vec<&Value> = entries
            .iter()
            .filter(|e| e.get("ReturnData") != Some(&Value::Bool(false)))
            .collect();
        ensure!(
            returned.len() == 1,
            "{id} must return exactly one series (ReturnData), returns {}",
            returned.len()
        );
        let expression = returned[0]
            .get("Expression")
            .and_then(Value::as_str)
            .unwrap_or_default();
        for m in &metrics {
            let used = m.id.as_deref().is_some_and(|i| {
                expression
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| w == i)
            });
            ensure!(
                used,
                "{id}'s expression {expression:?} leaves out {} ({:?})",
                m.metric,
                m.id
            );
        }
    }
    let above = fires_above(t, alarm, &Params::new());
    ensure!(
        above.is_some_and(|x| x < 1.0),
        "{id} must fire on one failed execution (GreaterThanThreshold below 1), fires above {above:?}"
    );
    ensure!(
        props.get("TreatMissingData").and_then(Value::as_str) == Some("notBreaching"),
        "{id}: no execution failing publishes no data, which is healthy: TreatMissingData notBreaching"
    );
    Ok(())
}

/// The parameter that sets the lag alarm, and why it is digits only: the
/// threshold is it with "000" appended, which is x1000 only for an integer.
pub const LAG_PARAMETER: &str = "ReplicationLagAlarmSeconds";
pub const LAG_PATTERN: &str = "^[1-9][0-9]{0,5}$";

/// Replication lag raises an alarm: deployed exactly with Replication=true,
/// on s3-fanout ReplicationLag of the replicator (FunctionName = its Ref,
/// the one dimension its records carry), p99, above
/// ReplicationLagAlarmSeconds converted to the metric's milliseconds for
/// every value the parameter allows, over several one-minute periods; no
/// data (no events) is healthy.
pub fn check_replication_lag_alarm(t: &Template) -> Check {
    let (replicator, _) = t.function(REPLICATOR)?;
    let alarms = alarms_on(t, NAMESPACE, "ReplicationLag");
    ensure!(
        alarms.len() == 1,
        "expected one alarm on {NAMESPACE} ReplicationLag, found {}",
        alarms.len()
    );
    let (id, alarm) = alarms[0];
    ensure!(
        !t.is_deployed(alarm, &Params::new())
            && t.is_deployed(alarm, &params(&[("Replication", "true")])),
        "{id} must be deployed exactly with Replication=true"
    );
    let metrics = alarm_metrics(t, alarm);
    ensure!(metrics.len() == 1, "{id} must read one metric");
    let m = &metrics[0];
    ensure!(
        m.dimensions.len() == 1
            && m.dimensions[0].0 == "FunctionName"
            && ref_name(&m.dimensions[0].1) == Some(replicator),
        "{id} must have the one dimension FunctionName = !Ref {replicator}, as the replicator's records do"
    );
    ensure!(
        m.stat.as_deref() == Some("p99"),
        "{id} must alarm on the p99 lag, has {:?}",
        m.stat
    );
    let parameter = t
        .parameter(LAG_PARAMETER)
        .ok_or_else(|| format!("no parameter {LAG_PARAMETER}"))?;
    ensure!(
        parameter.get("AllowedPattern").and_then(Value::as_str) == Some(LAG_PATTERN),
        "{LAG_PARAMETER} must have AllowedPattern {LAG_PATTERN}: whole seconds, so that the threshold in ms is exact"
    );
    let default = t
        .default_of(LAG_PARAMETER)
        .ok_or_else(|| format!("{LAG_PARAMETER} needs a default"))?;
    for seconds in [default.as_str(), "1", "45", "999999"] {
        let p = params(&[("Replication", "true"), (LAG_PARAMETER, seconds)]);
        let want: f64 = seconds.parse::<f64>().expect("digits") * 1000.0;
        let above = fires_above(t, alarm, &p);
        ensure!(
            above == Some(want),
            "{id} with {LAG_PARAMETER}={seconds} must fire above {want} ms, fires above {above:?}"
        );
    }
    let props = t.props(alarm);
    let period = props.get("Period").and_then(number).unwrap_or_default();
    let periods = props
        .get("EvaluationPeriods")
        .and_then(number)
        .unwrap_or_default();
    ensure!(
        period == 60.0 && periods >= 3.0,
        "{id}: a lag sustained over several minutes, not one slow key: Period 60, EvaluationPeriods >= 3 (has {period}, {periods})"
    );
    ensure!(
        props.get("TreatMissingData").and_then(Value::as_str) == Some("notBreaching"),
        "{id}: no events means no lag figures, which is healthy: TreatMissingData notBreaching"
    );
    Ok(())
}

/// Every alarm notifies AlarmTopicArn when it is set, and nothing when it
/// is not: AlarmActions (and OKActions, where present) evaluate to exactly
/// `[AlarmTopicArn]`, or are left out.
pub fn check_alarm_actions(t: &Template) -> Check {
    let topic = "arn:aws:sns:us-east-1:111122223333:alarms";
    for (id, alarm) in t.of_type("AWS::CloudWatch::Alarm") {
        let props = t.props(alarm);
        ensure!(
            props.get("AlarmActions").is_some(),
            "{id} has no AlarmActions: nobody would hear of it"
        );
        for (set, want) in [
            (false, None),
            (true, Some(vec![Value::String(topic.into())])),
        ] {
            let mut p = params(&[("Replication", "true")]);
            if set {
                p.insert("AlarmTopicArn".into(), topic.into());
            }
            let evaluated = t.eval(props, &p);
            for key in ["AlarmActions", "OKActions"] {
                if props.get(key).is_none() {
                    continue;
                }
                let got = evaluated.get(key).and_then(Value::as_array).cloned();
                ensure!(
                    got == want,
                    "{id} {key} with AlarmTopicArn {} must be {want:?}, is {got:?}",
                    if set { "set" } else { "empty" }
                );
            }
        }
    }
    Ok(())
}
