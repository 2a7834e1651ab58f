//! Invariants of the AWS SAM stack in `infra/template.yaml`.
//!
//! No AWS account is needed: the template is parsed (CloudFormation short
//! tags such as `!Ref` and `!GetAtt` included), parameter defaults, mappings
//! and conditions are evaluated the way CloudFormation would, and each test
//! asserts one property a failure mode of the fan-out depends on: visibility
//! timeout vs. function timeout, partial batch responses, the dead-letter
//! queue and its alarm, least-privilege IAM, and the wiring between the
//! template, the cargo workspace and the state machine definition.
//!
//! Every check is a function returning `Err` with the reason, so the
//! `*_is_caught` tests can break a copy of the template and prove that the
//! check notices. `scripts/check-infra.sh` runs cfn-lint, asl-validator and
//! `cargo lambda build` on the same files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

type Check = Result<(), String>;

/// Fails a check with a formatted reason unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($msg)+));
        }
    };
}

const FUNCTION_BINARIES: [&str; 4] = [
    "s3-fanout-planner",
    "s3-fanout-lister",
    "s3-fanout-copier",
    "s3-fanout-reporter",
];
const COPIER: &str = "s3-fanout-copier";
/// The ASL placeholders the state machine definition is written against,
/// used while `statemachine/sync.asl.json` does not exist yet.
const ASL_PLACEHOLDERS: [&str; 3] = [
    "PlannerFunctionArn",
    "ListerFunctionArn",
    "ReporterFunctionArn",
];
const ASL_PATH: &str = "../statemachine/sync.asl.json";
/// S3's bucket naming rule. A bucket parameter constrained by it cannot
/// carry an IAM wildcard (`*`, `?`) into a resource ARN.
const BUCKET_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$";
/// AWS guidance for Lambda SQS event sources: the queue's visibility timeout
/// is at least six times the function's timeout.
const VISIBILITY_FACTOR: f64 = 6.0;

// ------------------------------------------------------------ loading

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn infra_dir() -> PathBuf {
    repo().join("infra")
}

/// Converts YAML to JSON, turning CloudFormation's short-form tags into
/// their long forms (`!Ref X` into `{"Ref": "X"}`, `!GetAtt A.B` into
/// `{"Fn::GetAtt": ["A", "B"]}`, `!Sub s` into `{"Fn::Sub": "s"}`, ...).
fn yaml_to_json(value: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64().expect("a YAML number is an f64"))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => panic!("unsupported mapping key {other:?}"),
                };
                object.insert(key, yaml_to_json(value));
            }
            Value::Object(object)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = yaml_to_json(tagged.value);
            match name {
                "Ref" => json!({ "Ref": inner }),
                "Condition" => json!({ "Condition": inner }),
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (resource, attribute) = s
                            .split_once('.')
                            .unwrap_or_else(|| panic!("!GetAtt {s} has no attribute"));
                        json!({ "Fn::GetAtt": [resource, attribute] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                other => json!({ format!("Fn::{other}"): inner }),
            }
        }
    }
}

fn parse_template(text: &str) -> Value {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).expect("infra/template.yaml is valid YAML");
    yaml_to_json(yaml)
}

fn load() -> Template {
    let path = infra_dir().join("template.yaml");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Template::new(parse_template(&text))
}

/// A string, or the string form of a number or bool: CloudFormation hands
/// parameter values around as strings.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `x` or `[x, y]` as a list, as IAM allows for Action and Resource.
fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn ref_name(value: &Value) -> Option<&str> {
    value.get("Ref").and_then(Value::as_str)
}

fn get_att(value: &Value) -> Option<(&str, &str)> {
    let args = value.get("Fn::GetAtt")?.as_array()?;
    Some((args.first()?.as_str()?, args.get(1)?.as_str()?))
}

// ------------------------------------------------------------ the model

/// Parameter values for one evaluation; unset parameters take their
/// `Default`.
type Params = BTreeMap<String, String>;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

struct Template {
    doc: Value,
}

/// One IAM policy statement, with the `Fn::If` branches it sits in:
/// `(condition, true)` for the true branch, `(condition, false)` for the
/// false one.
#[derive(Debug, Clone)]
struct Statement {
    owner: String,
    guards: Vec<(String, bool)>,
    body: Value,
}

impl Statement {
    fn allows(&self) -> bool {
        self.body.get("Effect").and_then(Value::as_str) == Some("Allow")
    }

    fn actions(&self) -> Vec<String> {
        self.body
            .get("Action")
            .map(|a| one_or_many(a).into_iter().filter_map(scalar).collect())
            .unwrap_or_default()
    }

    fn resources(&self) -> Vec<String> {
        self.body.get("Resource").map(render).unwrap_or_default()
    }
}

impl Template {
    fn new(doc: Value) -> Self {
        Template { doc }
    }

    fn section(&self, name: &str) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.doc
            .get(name)
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    fn resources(&self) -> &Map<String, Value> {
        self.section("Resources")
    }

    fn resource_type(&self, id: &str) -> Option<&str> {
        self.resources().get(id)?.get("Type")?.as_str()
    }

    fn of_type(&self, ty: &str) -> Vec<(&str, &Value)> {
        self.resources()
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .map(|(id, r)| (id.as_str(), r))
            .collect()
    }

    fn props<'a>(&self, resource: &'a Value) -> &'a Value {
        resource.get("Properties").unwrap_or(&Value::Null)
    }

    fn parameter(&self, name: &str) -> Option<&Value> {
        self.section("Parameters").get(name)
    }

    fn is_parameter(&self, name: &str) -> bool {
        self.parameter(name).is_some()
    }

    fn default_of(&self, name: &str) -> Option<String> {
        self.parameter(name)?.get("Default").and_then(scalar)
    }

    fn allowed_values(&self, name: &str) -> Vec<String> {
        self.parameter(name)
            .and_then(|p| p.get("AllowedValues"))
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(scalar).collect())
            .unwrap_or_default()
    }

    /// The function whose cargo-lambda build produces `binary`.
    fn function(&self, binary: &str) -> Result<(&str, &Value), String> {
        let found: Vec<_> = self
            .of_type("AWS::Serverless::Function")
            .into_iter()
            .filter(|(_, f)| {
                f.pointer("/Metadata/BuildProperties/Binary")
                    .and_then(Value::as_str)
                    == Some(binary)
            })
            .collect();
        ensure!(
            found.len() == 1,
            "expected one function built from binary {binary}, found {}",
            found.len()
        );
        Ok(found[0])
    }

    /// A function property, falling back to `Globals.Function` as SAM does.
    fn function_prop(&self, function: &Value, name: &str) -> Option<Value> {
        self.props(function)
            .get(name)
            .or_else(|| self.doc.pointer(&format!("/Globals/Function/{name}")))
            .cloned()
    }

    /// The function's environment: `Globals` variables overlaid with its own,
    /// as SAM merges them.
    fn environment(&self, function: &Value) -> Map<String, Value> {
        let mut vars = self
            .doc
            .pointer("/Globals/Function/Environment/Variables")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(own) = self
            .props(function)
            .pointer("/Environment/Variables")
            .and_then(Value::as_object)
        {
            vars.extend(own.clone());
        }
        vars
    }

    /// The copier's SQS event source properties (there must be exactly one).
    fn copier_sqs_event(&self) -> Result<&Value, String> {
        let (id, copier) = self.function(COPIER)?;
        let events: Vec<_> = self
            .props(copier)
            .get("Events")
            .and_then(Value::as_object)
            .map(|e| {
                e.values()
                    .filter(|ev| ev.get("Type").and_then(Value::as_str) == Some("SQS"))
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            events.len() == 1,
            "{id} must have exactly one SQS event source, has {}",
            events.len()
        );
        Ok(self.props(events[0]))
    }

    /// The queue the copier consumes: its SQS event's `Queue` must be
    /// `!GetAtt <queue>.Arn` of a queue in this template.
    fn work_queue(&self) -> Result<(&str, &Value), String> {
        let event = self.copier_sqs_event()?;
        let queue = event
            .get("Queue")
            .ok_or("the copier's SQS event has no Queue")?;
        let (id, attribute) = get_att(queue)
            .ok_or_else(|| format!("the copier's SQS event Queue is not a !GetAtt: {queue}"))?;
        ensure!(
            attribute == "Arn",
            "the copier's SQS event Queue is {id}.{attribute}, not .Arn"
        );
        ensure!(
            self.resource_type(id) == Some("AWS::SQS::Queue"),
            "the copier consumes {id}, which is not an AWS::SQS::Queue"
        );
        Ok((id, &self.resources()[id]))
    }

    /// The work queue's dead-letter queue, from its RedrivePolicy.
    fn dead_letter_queue(&self) -> Result<(&str, &Value), String> {
        let (work_id, work) = self.work_queue()?;
        let target = self
            .props(work)
            .pointer("/RedrivePolicy/deadLetterTargetArn")
            .ok_or_else(|| format!("{work_id} has no RedrivePolicy.deadLetterTargetArn"))?;
        let (id, attribute) = get_att(target)
            .ok_or_else(|| format!("{work_id}'s dead-letter target is not a !GetAtt"))?;
        ensure!(
            attribute == "Arn" && self.resource_type(id) == Some("AWS::SQS::Queue"),
            "{work_id}'s dead-letter target {id}.{attribute} is not a queue's Arn"
        );
        Ok((id, &self.resources()[id]))
    }

    // ------------------------------------------------------ evaluation

    /// Evaluates intrinsics the way CloudFormation would for the given
    /// parameter values: parameter `Ref`s, `Fn::FindInMap`, `Fn::If` and
    /// the condition functions. References to resources and pseudo
    /// parameters stay as they are; `AWS::NoValue` disappears from lists.
    fn eval(&self, value: &Value, params: &Params) -> Value {
        match value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.eval(v, params))
                    .filter(|v| ref_name(v) != Some("AWS::NoValue"))
                    .collect(),
            ),
            Value::Object(object) if object.len() == 1 => {
                let (key, arg) = object.iter().next().expect("one entry");
                match key.as_str() {
                    "Ref" => match arg.as_str() {
                        Some(name) if self.is_parameter(name) => params
                            .get(name)
                            .cloned()
                            .or_else(|| self.default_of(name))
                            .map(Value::String)
                            .unwrap_or(Value::Null),
                        _ => value.clone(),
                    },
                    "Fn::FindInMap" => {
                        let args: Vec<Value> = arg
                            .as_array()
                            .map(|a| a.iter().map(|v| self.eval(v, params)).collect())
                            .unwrap_or_default();
                        let keys: Vec<String> = args.iter().filter_map(scalar).collect();
                        if keys.len() != 3 {
                            return Value::Null;
                        }
                        self.section("Mappings")
                            .get(&keys[0])
                            .and_then(|m| m.get(&keys[1]))
                            .and_then(|m| m.get(&keys[2]))
                            .cloned()
                            .unwrap_or(Value::Null)
                    }
                    "Fn::If" => {
                        let args = arg.as_array().cloned().unwrap_or_default();
                        let condition = args.first().and_then(Value::as_str).unwrap_or_default();
                        let branch = if self.condition(condition, params) {
                            args.get(1)
                        } else {
                            args.get(2)
                        };
                        branch.map(|b| self.eval(b, params)).unwrap_or(Value::Null)
                    }
                    "Condition" => {
                        Value::Bool(self.condition(arg.as_str().unwrap_or_default(), params))
                    }
                    "Fn::Equals" => {
                        let args: Vec<Value> = arg
                            .as_array()
                            .map(|a| a.iter().map(|v| self.eval(v, params)).collect())
                            .unwrap_or_default();
                        Value::Bool(args.len() == 2 && scalar(&args[0]) == scalar(&args[1]))
                    }
                    "Fn::Not" => Value::Bool(!self.truthy(&arg[0], params)),
                    "Fn::And" => {
                        Value::Bool(one_or_many(arg).iter().all(|c| self.truthy(c, params)))
                    }
                    "Fn::Or" => {
                        Value::Bool(one_or_many(arg).iter().any(|c| self.truthy(c, params)))
                    }
                    _ => value.clone(),
                }
            }
            Value::Object(object) => Value::Object(
                object
                    .iter()
                    .map(|(k, v)| (k.clone(), self.eval(v, params)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn truthy(&self, value: &Value, params: &Params) -> bool {
        self.eval(value, params) == Value::Bool(true)
    }

    fn condition(&self, name: &str, params: &Params) -> bool {
        let expression = self
            .section("Conditions")
            .get(name)
            .unwrap_or_else(|| panic!("condition {name} is not declared"));
        self.truthy(expression, params)
    }

    fn eval_number(&self, value: &Value, params: &Params) -> Option<f64> {
        number(&self.eval(value, params))
    }

    // ------------------------------------------------------ IAM

    /// Every IAM statement in the template: role, policy and managed-policy
    /// documents, SAM `Policies` documents, and bucket and queue policies.
    fn statements(&self) -> Vec<Statement> {
        let mut out = Vec::new();
        for (id, resource) in self.resources() {
            let props = self.props(resource);
            let ty = resource
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let documents: Vec<&Value> = match ty {
                "AWS::IAM::Role" => props
                    .get("Policies")
                    .map(one_or_many)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.get("PolicyDocument"))
                    .collect(),
                "AWS::IAM::Policy"
                | "AWS::IAM::ManagedPolicy"
                | "AWS::S3::BucketPolicy"
                | "AWS::SQS::QueuePolicy" => props.get("PolicyDocument").into_iter().collect(),
                "AWS::Serverless::Function" | "AWS::Serverless::StateMachine" => props
                    .get("Policies")
                    .map(one_or_many)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| p.get("Statement").is_some())
                    .collect(),
                _ => Vec::new(),
            };
            for document in documents {
                if let Some(statements) = document.get("Statement") {
                    collect_statements(id, statements, &mut Vec::new(), &mut out);
                }
            }
        }
        out
    }

    /// The statements of one resource's policies.
    fn statements_of(&self, owner: &str) -> Vec<Statement> {
        self.statements()
            .into_iter()
            .filter(|s| s.owner == owner)
            .collect()
    }

    /// The logical id of the role a function runs as: `Role` must be
    /// `!GetAtt <role>.Arn` of an `AWS::IAM::Role` in this template.
    fn function_role(&self, function_id: &str) -> Result<&str, String> {
        let function = &self.resources()[function_id];
        let role = self
            .props(function)
            .get("Role")
            .ok_or_else(|| format!("{function_id} has no explicit Role"))?;
        let (role_id, attribute) = get_att(role)
            .ok_or_else(|| format!("{function_id}'s Role is not a !GetAtt of a role here"))?;
        ensure!(
            attribute == "Arn" && self.resource_type(role_id) == Some("AWS::IAM::Role"),
            "{function_id}'s Role {role_id}.{attribute} is not the Arn of an AWS::IAM::Role"
        );
        Ok(role_id)
    }
}

fn collect_statements(
    owner: &str,
    value: &Value,
    guards: &mut Vec<(String, bool)>,
    out: &mut Vec<Statement>,
) {
    match value {
        Value::Array(items) => {
            for item in items {
                collect_statements(owner, item, guards, out);
            }
        }
        Value::Object(object) => {
            if let Some(args) = object.get("Fn::If").and_then(Value::as_array) {
                let condition = args.first().and_then(Value::as_str).unwrap_or_default();
                for (branch, taken) in [(args.get(1), true), (args.get(2), false)] {
                    if let Some(branch) = branch {
                        guards.push((condition.to_string(), taken));
                        collect_statements(owner, branch, guards, out);
                        guards.pop();
                    }
                }
            } else if ref_name(value) != Some("AWS::NoValue") {
                out.push(Statement {
                    owner: owner.to_string(),
                    guards: guards.clone(),
                    body: value.clone(),
                });
            }
        }
        _ => {}
    }
}

/// Resource values as strings, intrinsics rendered in `${...}` form:
/// `!GetAtt B.Arn` as `${B.Arn}`, `!Ref X` as `${X}`, a `!Sub` as its
/// template, both branches of an `!If`.
fn render(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(render).collect(),
        Value::Object(object) if object.len() == 1 => {
            let (key, arg) = object.iter().next().expect("one entry");
            match key.as_str() {
                "Ref" => vec![format!("${{{}}}", arg.as_str().unwrap_or("?"))],
                "Fn::GetAtt" => match get_att(value) {
                    Some((r, a)) => vec![format!("${{{r}.{a}}}")],
                    None => vec!["<unknown>".into()],
                },
                "Fn::Sub" => match arg {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .first()
                        .and_then(Value::as_str)
                        .map(|s| vec![s.to_string()])
                        .unwrap_or_else(|| vec!["<unknown>".into()]),
                    _ => vec!["<unknown>".into()],
                },
                "Fn::If" => arg
                    .as_array()
                    .map(|a| a.iter().skip(1).flat_map(render).collect())
                    .unwrap_or_default(),
                _ => vec!["<unknown>".into()],
            }
        }
        _ => vec!["<unknown>".into()],
    }
}

/// IAM's glob: `*` any run of characters, `?` one; actions compare without
/// regard to case.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    go(&p, &t)
}

/// Whether an action pattern grants any S3 write: every `s3:Put*`,
/// `s3:Delete*` and `s3:Abort*` action, replication and restores.
fn grants_s3_write(action: &str) -> bool {
    const WRITES: [&str; 14] = [
        "s3:PutObject",
        "s3:PutObjectAcl",
        "s3:PutObjectTagging",
        "s3:PutObjectRetention",
        "s3:PutObjectLegalHold",
        "s3:PutBucketPolicy",
        "s3:PutLifecycleConfiguration",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:DeleteObjectTagging",
        "s3:DeleteBucket",
        "s3:AbortMultipartUpload",
        "s3:ReplicateObject",
        "s3:RestoreObject",
    ];
    let lower = action.to_lowercase();
    WRITES.iter().any(|w| glob(action, w))
        || ["s3:put", "s3:delete", "s3:abort"]
            .iter()
            .any(|p| lower.starts_with(p))
}

// ------------------------------------------------------------ checks

/// (a) The work queue's visibility timeout is at least 6x the copier's
/// timeout, for the default and for every value CopierTimeout allows.
fn check_visibility_timeout(t: &Template) -> Check {
    let (_, copier) = t.function(COPIER)?;
    let (queue_id, queue) = t.work_queue()?;
    let timeout = t
        .function_prop(copier, "Timeout")
        .ok_or("the copier has no Timeout (Lambda's default of 3 s is never right)")?;
    let visibility = t
        .props(queue)
        .get("VisibilityTimeout")
        .ok_or_else(|| format!("{queue_id} has no VisibilityTimeout (the 30 s default)"))?;

    // Every value the copier's timeout can take at deploy time.
    let mut cases = vec![Params::new()];
    if let Some(parameter) = ref_name(&timeout).filter(|p| t.is_parameter(p)) {
        let allowed = t.allowed_values(parameter);
        let spec = t.parameter(parameter).expect("declared");
        ensure!(
            !allowed.is_empty() || spec.get("MaxValue").is_some(),
            "{parameter} must be bounded (AllowedValues or MaxValue) for the visibility timeout to keep up"
        );
        if allowed.is_empty() {
            let max = spec.get("MaxValue").and_then(scalar).expect("MaxValue");
            cases.push(params(&[(parameter, &max)]));
        }
        for value in allowed {
            cases.push(params(&[(parameter, &value)]));
        }
    }
    for case in cases {
        let timeout_s = t.eval_number(&timeout, &case).ok_or_else(|| {
            format!("cannot evaluate the copier's Timeout {timeout} with {case:?}")
        })?;
        let visibility_s = t.eval_number(visibility, &case).ok_or_else(|| {
            format!("cannot evaluate {queue_id}'s VisibilityTimeout with {case:?}")
        })?;
        ensure!(
            visibility_s >= VISIBILITY_FACTOR * timeout_s,
            "{queue_id} VisibilityTimeout {visibility_s} s < 6 x copier Timeout {timeout_s} s (parameters {case:?})"
        );
        ensure!(
            visibility_s <= 43_200.0,
            "{queue_id} VisibilityTimeout {visibility_s} s is above SQS's 12-hour maximum"
        );
        ensure!(
            timeout_s <= 900.0,
            "copier Timeout {timeout_s} s is above Lambda's 900 s maximum"
        );
    }
    Ok(())
}

/// (b) Every queue states `SqsManagedSseEnabled: true`.
fn check_queues_encrypted(t: &Template) -> Check {
    let queues = t.of_type("AWS::SQS::Queue");
    ensure!(!queues.is_empty(), "no AWS::SQS::Queue in the template");
    for (id, queue) in queues {
        ensure!(
            t.props(queue).get("SqsManagedSseEnabled") == Some(&Value::Bool(true)),
            "{id} must set SqsManagedSseEnabled: true"
        );
    }
    Ok(())
}

/// (c) The copier reports partial batch failures and its concurrency is
/// capped from a parameter.
fn check_copier_event_source(t: &Template) -> Check {
    let event = t.copier_sqs_event()?;
    ensure!(
        event.get("FunctionResponseTypes") == Some(&json!(["ReportBatchItemFailures"])),
        "the copier's SQS event must have FunctionResponseTypes [ReportBatchItemFailures], has {:?}",
        event.get("FunctionResponseTypes")
    );
    let max = event
        .pointer("/ScalingConfig/MaximumConcurrency")
        .ok_or("the copier's SQS event has no ScalingConfig.MaximumConcurrency")?;
    let parameter = ref_name(max).filter(|p| t.is_parameter(p)).ok_or_else(|| {
        format!("ScalingConfig.MaximumConcurrency must !Ref a parameter, is {max}")
    })?;
    let spec = t.parameter(parameter).expect("declared");
    let min_value = spec.get("MinValue").and_then(number);
    let max_value = spec.get("MaxValue").and_then(number);
    ensure!(
        min_value.is_some_and(|v| v >= 2.0) && max_value.is_some_and(|v| v <= 1000.0),
        "{parameter} must be bounded to SQS's 2-1000 range, is {min_value:?}-{max_value:?}"
    );
    let batch = event
        .get("BatchSize")
        .ok_or("the copier's SQS event has no BatchSize")?;
    let batch_max = match ref_name(batch).filter(|p| t.is_parameter(p)) {
        Some(p) => t
            .parameter(p)
            .and_then(|s| s.get("MaxValue"))
            .and_then(number),
        None => number(batch),
    };
    ensure!(
        batch_max.is_some_and(|b| b <= 10.0)
            || event.get("MaximumBatchingWindowInSeconds").is_some(),
        "a BatchSize above 10 needs a batching window, which the visibility timeout must then cover"
    );
    Ok(())
}

/// The bucket named by an S3 ARN or reference, if the value is one.
enum S3Target {
    /// A bucket created by this template.
    OwnBucket,
    /// A bucket named by a parameter.
    Parameter(String),
    /// A literal bucket name.
    Literal,
    /// Not recognizably a bucket of this stack: `*`, unknown forms.
    Unverifiable,
}

fn s3_target(t: &Template, resource: &str) -> S3Target {
    let own = |name: &str| t.resource_type(name) == Some("AWS::S3::Bucket");
    // ${Bucket.Arn} or ${Bucket.Arn}/key
    if let Some(rest) = resource.strip_prefix("${") {
        if let Some((inner, _)) = rest.split_once('}') {
            let name = inner.strip_suffix(".Arn").unwrap_or(inner);
            if own(name) {
                return S3Target::OwnBucket;
            }
        }
        return S3Target::Unverifiable;
    }
    let bucket = ["arn:aws:s3:::", "arn:${AWS::Partition}:s3:::"]
        .iter()
        .find_map(|p| resource.strip_prefix(p))
        .map(|rest| rest.split('/').next().unwrap_or_default());
    match bucket {
        None | Some("") => S3Target::Unverifiable,
        Some(b) if b.contains('*') || b.contains('?') => S3Target::Unverifiable,
        Some(b) => match b.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            Some(name) if own(name) => S3Target::OwnBucket,
            Some(name) if t.is_parameter(name) => S3Target::Parameter(name.to_string()),
            Some(_) => S3Target::Unverifiable,
            None if b.contains("${") => S3Target::Unverifiable,
            None => S3Target::Literal,
        },
    }
}

/// (d) No statement grants an S3 write on `*` or a wildcard bucket, and no
/// function or state machine statement uses `Resource: "*"` at all.
fn check_no_wildcard_writes(t: &Template) -> Check {
    for statement in t.statements().iter().filter(|s| s.allows()) {
        let owner = &statement.owner;
        ensure!(
            statement.body.get("NotAction").is_none()
                && statement.body.get("NotResource").is_none(),
            "{owner}: an Allow with NotAction or NotResource grants everything else"
        );
        let writes: Vec<String> = statement
            .actions()
            .into_iter()
            .filter(|a| a == "*" || grants_s3_write(a))
            .collect();
        if writes.is_empty() {
            continue;
        }
        for resource in statement.resources() {
            match s3_target(t, &resource) {
                S3Target::OwnBucket | S3Target::Literal => {}
                S3Target::Parameter(name) => {
                    let pattern = t
                        .parameter(&name)
                        .and_then(|p| p.get("AllowedPattern"))
                        .and_then(Value::as_str);
                    ensure!(
                        pattern == Some(BUCKET_NAME_PATTERN),
                        "{owner}: {writes:?} on {resource}: bucket parameter {name} must have AllowedPattern {BUCKET_NAME_PATTERN} so it cannot be a wildcard"
                    );
                }
                S3Target::Unverifiable => {
                    return Err(format!(
                        "{owner}: {writes:?} granted on {resource}, which is not one named bucket"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The roles functions and state machines run as, with who runs as them.
fn execution_policy_owners(t: &Template) -> Result<Vec<String>, String> {
    let mut owners = Vec::new();
    for (id, function) in t.of_type("AWS::Serverless::Function") {
        ensure!(
            t.props(function).get("Policies").is_none(),
            "{id} uses SAM Policies: SAM then also attaches AWS managed policies with Resource \"*\"; give it an explicit role"
        );
        owners.push(t.function_role(id)?.to_string());
    }
    for (id, _) in t.of_type("AWS::Serverless::StateMachine") {
        owners.push(id.to_string());
    }
    Ok(owners)
}

fn check_no_star_resources(t: &Template) -> Check {
    let owners = execution_policy_owners(t)?;
    for owner in &owners {
        if let Some(role) = t.resources().get(owner.as_str()) {
            ensure!(
                t.props(role).get("ManagedPolicyArns").is_none(),
                "{owner} attaches managed policies, whose statements this test cannot see"
            );
        }
        let statements = t.statements_of(owner);
        ensure!(!statements.is_empty(), "{owner} has no policy statements");
        for statement in statements {
            ensure!(
                statement.body.get("Resource").is_some(),
                "{owner}: statement {} has no Resource",
                statement.body
            );
            for resource in statement.resources() {
                ensure!(
                    resource != "*" && resource != "<unknown>",
                    "{owner}: statement {} uses Resource {resource}",
                    statement.body.get("Sid").unwrap_or(&Value::Null)
                );
            }
        }
    }
    // Standalone policies attached to those roles would add statements too.
    for ty in ["AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"] {
        ensure!(
            t.of_type(ty).is_empty(),
            "{ty} resources are not expected: put statements in the role they belong to"
        );
    }
    Ok(())
}

/// (e) s3:DeleteObject is granted only inside `!If` on a condition that
/// follows the AllowDelete parameter.
fn check_delete_only_when_allowed(t: &Template) -> Check {
    let mut granted = 0;
    for statement in t.statements().iter().filter(|s| s.allows()) {
        let deletes = statement
            .actions()
            .iter()
            .any(|a| glob(a, "s3:DeleteObject") || glob(a, "s3:DeleteObjectVersion"));
        if !deletes {
            continue;
        }
        let guarded = statement.guards.iter().any(|(condition, taken)| {
            let when_true = t.condition(condition, &params(&[("AllowDelete", "true")]));
            let when_false = t.condition(condition, &params(&[("AllowDelete", "false")]));
            // The branch taken must be exactly the AllowDelete=true case.
            (when_true == *taken) && (when_false != *taken)
        });
        ensure!(
            guarded,
            "{}: s3:DeleteObject granted outside an !If on AllowDelete: {}",
            statement.owner,
            statement.body
        );
        granted += 1;
    }
    ensure!(
        granted > 0,
        "no statement grants s3:DeleteObject when AllowDelete is true"
    );
    ensure!(
        t.default_of("AllowDelete").as_deref() == Some("false"),
        "AllowDelete must default to \"false\""
    );
    let (_, copier) = t.function(COPIER)?;
    ensure!(
        t.environment(copier).get("S3_FANOUT_ALLOW_DELETE") == Some(&json!({"Ref": "AllowDelete"})),
        "the copier's S3_FANOUT_ALLOW_DELETE must !Ref AllowDelete, so code and policy agree"
    );
    Ok(())
}

/// (f) An alarm fires on any visible message in the dead-letter queue.
fn check_dead_letter_alarm(t: &Template) -> Check {
    let (dlq_id, dlq) = t.dead_letter_queue()?;
    ensure!(
        t.eval_number(
            t.props(dlq)
                .get("MessageRetentionPeriod")
                .unwrap_or(&Value::Null),
            &Params::new()
        ) == Some(1_209_600.0),
        "{dlq_id} must keep messages 14 days (MessageRetentionPeriod 1209600)"
    );
    let alarms: Vec<_> = t
        .of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .filter(|(_, alarm)| {
            let p = t.props(alarm);
            let on_dlq = p
                .get("Dimensions")
                .map(one_or_many)
                .unwrap_or_default()
                .iter()
                .any(|d| {
                    d.get("Name").and_then(Value::as_str) == Some("QueueName")
                        && d.get("Value").and_then(get_att) == Some((dlq_id, "QueueName"))
                });
            p.get("Namespace").and_then(Value::as_str) == Some("AWS/SQS")
                && p.get("MetricName").and_then(Value::as_str)
                    == Some("ApproximateNumberOfMessagesVisible")
                && on_dlq
        })
        .collect();
    ensure!(
        !alarms.is_empty(),
        "no AWS/SQS ApproximateNumberOfMessagesVisible alarm on {dlq_id}"
    );
    for (id, alarm) in alarms {
        let p = t.props(alarm);
        let threshold = p.get("Threshold").and_then(number);
        let operator = p.get("ComparisonOperator").and_then(Value::as_str);
        let fires_on_one = match (operator, threshold) {
            (Some("GreaterThanThreshold"), Some(x)) => x < 1.0,
            (Some("GreaterThanOrEqualToThreshold"), Some(x)) => x <= 1.0,
            _ => false,
        };
        ensure!(
            fires_on_one,
            "{id} must fire on one message ({operator:?} {threshold:?})"
        );
    }
    Ok(())
}

/// (g) maxReceiveCount and the copier's S3_FANOUT_MAX_RECEIVE_COUNT are the
/// same parameter.
fn check_max_receive_count(t: &Template) -> Check {
    let (queue_id, queue) = t.work_queue()?;
    let redrive = t
        .props(queue)
        .pointer("/RedrivePolicy/maxReceiveCount")
        .ok_or_else(|| format!("{queue_id} has no RedrivePolicy.maxReceiveCount"))?;
    let parameter = ref_name(redrive)
        .filter(|p| t.is_parameter(p))
        .ok_or_else(|| format!("{queue_id} maxReceiveCount must !Ref a parameter, is {redrive}"))?;
    let (_, copier) = t.function(COPIER)?;
    let env = t.environment(copier);
    ensure!(
        env.get("S3_FANOUT_MAX_RECEIVE_COUNT") == Some(&json!({ "Ref": parameter })),
        "the copier's S3_FANOUT_MAX_RECEIVE_COUNT must !Ref {parameter}, is {:?}",
        env.get("S3_FANOUT_MAX_RECEIVE_COUNT")
    );
    ensure!(
        t.default_of(parameter).as_deref() == Some("5"),
        "{parameter} should default to 5"
    );
    Ok(())
}

/// The directory a function's CodeUri names, relative to the template.
fn code_dir(t: &Template, function: &Value) -> Result<PathBuf, String> {
    let uri = t
        .function_prop(function, "CodeUri")
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or("function without a string CodeUri")?;
    // canonicalize: the template's own directory is where SAM resolves it.
    infra_dir()
        .join(&uri)
        .canonicalize()
        .map_err(|e| format!("CodeUri {uri} does not exist relative to infra/: {e}"))
}

/// (h) Four Rust functions, built by cargo-lambda from the workspace, on
/// provided.al2023 and the Architecture parameter (default arm64).
fn check_functions_build(t: &Template) -> Check {
    let functions = t.of_type("AWS::Serverless::Function");
    let binaries: BTreeSet<&str> = functions
        .iter()
        .filter_map(|(_, f)| f.pointer("/Metadata/BuildProperties/Binary")?.as_str())
        .collect();
    ensure!(
        functions.len() == FUNCTION_BINARIES.len()
            && binaries == FUNCTION_BINARIES.iter().copied().collect(),
        "expected one function per binary {FUNCTION_BINARIES:?}, found {binaries:?} in {} functions",
        functions.len()
    );
    let architecture = t
        .parameter("Architecture")
        .ok_or("no Architecture parameter")?;
    ensure!(
        architecture.get("Default").and_then(Value::as_str) == Some("arm64"),
        "Architecture must default to arm64"
    );
    ensure!(
        t.allowed_values("Architecture") == ["arm64", "x86_64"],
        "Architecture must allow exactly arm64 and x86_64"
    );
    for (id, function) in functions {
        ensure!(
            function
                .pointer("/Metadata/BuildMethod")
                .and_then(Value::as_str)
                == Some("rust-cargolambda"),
            "{id} must have Metadata.BuildMethod rust-cargolambda"
        );
        ensure!(
            t.function_prop(function, "Runtime") == Some(json!("provided.al2023")),
            "{id} must run on provided.al2023"
        );
        ensure!(
            t.function_prop(function, "Architectures") == Some(json!([{ "Ref": "Architecture" }])),
            "{id} Architectures must be [!Ref Architecture]"
        );
        let binary = function
            .pointer("/Metadata/BuildProperties/Binary")
            .and_then(Value::as_str)
            .expect("checked above");
        let root = code_dir(t, function)?;
        let manifest = fs::read_to_string(root.join("Cargo.toml"))
            .map_err(|e| format!("{id}: no Cargo.toml at CodeUri {}: {e}", root.display()))?;
        if let Some(crate_dir) = function_crate_dir(&root, binary) {
            let member = crate_dir
                .strip_prefix(&root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            ensure!(
                workspace_list(&manifest, "members").contains(&member),
                "{member} (package {binary}) is not a member of the workspace at {}",
                root.display()
            );
            // SAM runs `cargo lambda build --bin <Binary>` at CodeUri,
            // without --package. In a workspace whose root is also a package,
            // cargo then only looks in the default members, which are just
            // the root unless `default-members` says otherwise.
            if manifest_has_table(&manifest, "package") {
                ensure!(
                    workspace_list(&manifest, "default-members").contains(&member),
                    "SAM's `cargo lambda build --bin {binary}` at the workspace root cannot find {member}: \
                     add it to [workspace] default-members in Cargo.toml"
                );
            }
        }
    }
    Ok(())
}

/// `functions/<x>` whose Cargo.toml names package `binary`, if it exists yet.
fn function_crate_dir(root: &Path, binary: &str) -> Option<PathBuf> {
    let entries = fs::read_dir(root.join("functions")).ok()?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|dir| {
            fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|m| {
                m.lines().any(|line| {
                    let line = line.trim();
                    line.starts_with("name") && line.contains(&format!("\"{binary}\""))
                })
            })
        })
}

fn manifest_has_table(manifest: &str, table: &str) -> bool {
    manifest.lines().any(|l| l.trim() == format!("[{table}]"))
}

/// The strings of `key = [...]` in the `[workspace]` table (a small reader:
/// no TOML parser among the dependencies).
fn workspace_list(manifest: &str, key: &str) -> Vec<String> {
    let mut in_workspace = false;
    let mut collecting = false;
    let mut text = String::new();
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !collecting {
            in_workspace = trimmed == "[workspace]";
            continue;
        }
        if in_workspace && !collecting {
            if let Some((k, v)) = trimmed.split_once('=')
                && k.trim() == key
            {
                collecting = true;
                text.push_str(v);
            }
        } else if collecting {
            text.push_str(trimmed);
        }
        if collecting && text.contains(']') {
            break;
        }
    }
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim_start_matches("./").to_string())
        .collect()
}

/// The `${Name}` placeholders of an ASL definition (not `$.path` or
/// JSONata `{% %}` expressions).
fn placeholders(definition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = definition;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        if let Some(end) = rest.find('}') {
            out.insert(rest[..end].to_string());
            rest = &rest[end + 1..];
        }
    }
    out
}

fn asl_placeholders() -> Result<BTreeSet<String>, String> {
    let path = infra_dir().join(ASL_PATH);
    match fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
            Ok(placeholders(&text))
        }
        // Not written yet: the names it is being written against.
        Err(_) => Ok(ASL_PLACEHOLDERS.iter().map(|s| s.to_string()).collect()),
    }
}

/// (i) The state machine loads the ASL file, substitutes every placeholder
/// in it with a function of this stack, and may invoke exactly those.
fn check_state_machine(t: &Template, placeholders: &BTreeSet<String>) -> Check {
    let machines = t.of_type("AWS::Serverless::StateMachine");
    ensure!(
        machines.len() == 1,
        "expected one state machine, found {}",
        machines.len()
    );
    let (id, machine) = machines[0];
    let p = t.props(machine);
    ensure!(
        p.get("Type").and_then(Value::as_str) == Some("STANDARD"),
        "{id} must be a STANDARD workflow: runs outlast Express's 5 minutes"
    );
    ensure!(
        p.get("DefinitionUri").and_then(Value::as_str) == Some(ASL_PATH),
        "{id} DefinitionUri must be {ASL_PATH}"
    );
    let substitutions = p
        .get("DefinitionSubstitutions")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{id} has no DefinitionSubstitutions"))?;
    let keys: BTreeSet<String> = substitutions.keys().cloned().collect();
    ensure!(
        &keys == placeholders,
        "{id} DefinitionSubstitutions {keys:?} must match the ASL placeholders {placeholders:?}"
    );
    let mut used = BTreeSet::new();
    for (key, value) in substitutions {
        let (function, attribute) =
            get_att(value).ok_or_else(|| format!("{id} substitution {key} is not a !GetAtt"))?;
        ensure!(
            attribute == "Arn" && t.resource_type(function) == Some("AWS::Serverless::Function"),
            "{id} substitution {key} must be a function's Arn, is {function}.{attribute}"
        );
        used.insert(function.to_string());
    }

    // The invoke permissions: exactly the functions used, unqualified and
    // qualified (":*" for versions and aliases).
    let mut invocable = BTreeSet::new();
    for statement in t.statements_of(id).iter().filter(|s| s.allows()) {
        let actions = statement.actions();
        ensure!(
            actions.iter().all(|a| a == "lambda:InvokeFunction"),
            "{id}'s role may only invoke functions, statement grants {actions:?}"
        );
        for resource in statement.resources() {
            let function = resource
                .strip_prefix("${")
                .and_then(|r| {
                    r.strip_suffix(".Arn}")
                        .or_else(|| r.strip_suffix(".Arn}:*"))
                })
                .filter(|f| t.resource_type(f) == Some("AWS::Serverless::Function"))
                .ok_or_else(|| {
                    format!("{id} may invoke {resource}, not a function of this stack")
                })?;
            invocable.insert(resource.clone());
            ensure!(
                used.contains(function),
                "{id} may invoke {function}, which its definition does not use"
            );
        }
    }
    for function in &used {
        for resource in [
            format!("${{{function}.Arn}}"),
            format!("${{{function}.Arn}}:*"),
        ] {
            ensure!(
                invocable.contains(&resource),
                "{id}'s role cannot invoke {resource}"
            );
        }
    }
    let policies = p.get("Policies").map(one_or_many).unwrap_or_default();
    ensure!(
        policies.iter().all(|d| d.get("Statement").is_some()),
        "{id} Policies must be inline statements, not managed or SAM policy templates"
    );
    Ok(())
}

/// (action, resource) pairs an IAM role is granted.
type Grants = Vec<(String, String)>;

/// The permissions each function's role must have, no more, no less (KMS
/// and delete statements, which depend on parameters, are checked apart).
fn check_least_privilege(t: &Template) -> Check {
    let src = "arn:${AWS::Partition}:s3:::${SourceBucket}";
    let src_objects = "arn:${AWS::Partition}:s3:::${SourceBucket}/${SourcePrefix}*";
    let dst = "arn:${AWS::Partition}:s3:::${DestinationBucket}";
    let dst_objects = "arn:${AWS::Partition}:s3:::${DestinationBucket}/${DestinationPrefix}*";
    let report = "${ReportBucket.Arn}";
    let report_objects = "${ReportBucket.Arn}/${ReportPrefix}*";
    let queue = "${WorkQueue.Arn}";
    let log = |id: &str| format!("${{{id}LogGroup.Arn}}");
    let logs = |id: &str| {
        vec![
            ("logs:CreateLogStream".to_string(), log(id)),
            ("logs:PutLogEvents".to_string(), log(id)),
        ]
    };
    let grants = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, r)| ((*a).to_string(), (*r).to_string()))
            .collect()
    };
    let report_rw = [
        ("s3:GetObject", report_objects),
        ("s3:PutObject", report_objects),
    ];
    let expected: [(&str, &str, Grants); 4] = [
        ("s3-fanout-planner", "Planner", {
            // The destination too: the preflight lists one key of each.
            let mut g = grants(&[("s3:ListBucket", src), ("s3:ListBucket", dst)]);
            g.extend(grants(&report_rw));
            g
        }),
        ("s3-fanout-lister", "Lister", {
            let mut g = grants(&[
                ("s3:ListBucket", src),
                ("s3:ListBucket", dst),
                ("sqs:SendMessage", queue),
                // GetObject of a checkpoint not written yet must be a 404.
                ("s3:ListBucket", report),
            ]);
            g.extend(grants(&report_rw));
            g
        }),
        ("s3-fanout-copier", "Copier", {
            let mut g = grants(&[
                ("sqs:ReceiveMessage", queue),
                ("sqs:DeleteMessage", queue),
                ("sqs:GetQueueAttributes", queue),
                ("sqs:ChangeMessageVisibility", queue),
                ("sqs:SendMessage", queue),
                ("s3:GetObject", src_objects),
                ("s3:GetObjectVersion", src_objects),
                ("s3:GetObjectTagging", src_objects),
                ("s3:ListBucket", src),
                ("s3:PutObject", dst_objects),
                ("s3:PutObjectTagging", dst_objects),
                ("s3:AbortMultipartUpload", dst_objects),
                ("s3:GetObject", dst_objects),
                ("s3:ListBucket", report),
            ]);
            g.extend(grants(&report_rw));
            g
        }),
        ("s3-fanout-reporter", "Reporter", {
            // Queue depth: whether a run with missing results is still copying.
            let mut g = grants(&[("s3:ListBucket", report), ("sqs:GetQueueAttributes", queue)]);
            g.extend(grants(&report_rw));
            g
        }),
    ];
    for (binary, prefix, mut want) in expected {
        let (id, _) = t.function(binary)?;
        let role = t.function_role(id)?;
        want.extend(logs(prefix));
        let want: BTreeSet<(String, String)> = want.into_iter().collect();
        let mut have = BTreeSet::new();
        for statement in t.statements_of(role) {
            ensure!(
                statement.allows(),
                "{role} has a non-Allow statement {}",
                statement.body
            );
            if !statement.guards.is_empty() {
                continue; // conditional grants: delete and KMS checks
            }
            for action in statement.actions() {
                for resource in statement.resources() {
                    have.insert((action.clone(), resource));
                }
            }
        }
        let extra: Vec<_> = have.difference(&want).collect();
        let missing: Vec<_> = want.difference(&have).collect();
        ensure!(
            extra.is_empty() && missing.is_empty(),
            "{role} ({binary}): grants beyond least privilege {extra:?}, missing {missing:?}"
        );
    }
    Ok(())
}

/// SSE-KMS: with key ARNs given, the copier may decrypt the source and
/// encrypt (GenerateDataKey + Decrypt) the destination; without, nothing.
fn check_kms(t: &Template) -> Check {
    let (id, _) = t.function(COPIER)?;
    let role = t.function_role(id)?;
    let key_params = ["SourceKmsKeyArn", "DestinationKmsKeyArn"];
    for name in key_params {
        ensure!(
            t.default_of(name).as_deref() == Some(""),
            "{name} must default to empty (no KMS)"
        );
    }
    let with_keys = params(&[
        (
            "SourceKmsKeyArn",
            "arn:aws:kms:us-east-1:111122223333:key/src",
        ),
        (
            "DestinationKmsKeyArn",
            "arn:aws:kms:us-east-1:111122223333:key/dst",
        ),
    ]);
    let active = |statement: &Statement, p: &Params| {
        statement
            .guards
            .iter()
            .all(|(c, taken)| t.condition(c, p) == *taken)
    };
    let kms_grants = |p: &Params| -> BTreeSet<(String, String)> {
        t.statements_of(role)
            .iter()
            .filter(|s| active(s, p))
            .flat_map(|s| {
                let body = t.eval(&s.body, p);
                let actions: Vec<String> = one_or_many(body.get("Action").unwrap_or(&Value::Null))
                    .into_iter()
                    .filter_map(scalar)
                    .filter(|a| a.starts_with("kms:"))
                    .collect();
                let resources: Vec<String> = body.get("Resource").map(render).unwrap_or_default();
                actions
                    .into_iter()
                    .flat_map(move |a| resources.clone().into_iter().map(move |r| (a.clone(), r)))
            })
            .collect()
    };
    ensure!(
        kms_grants(&Params::new()).is_empty(),
        "{role} has KMS permissions although no key is configured"
    );
    let want: BTreeSet<(String, String)> = [
        ("kms:Decrypt", "arn:aws:kms:us-east-1:111122223333:key/src"),
        (
            "kms:GenerateDataKey",
            "arn:aws:kms:us-east-1:111122223333:key/dst",
        ),
        ("kms:Decrypt", "arn:aws:kms:us-east-1:111122223333:key/dst"),
    ]
    .iter()
    .map(|(a, r)| ((*a).to_string(), (*r).to_string()))
    .collect();
    let have = kms_grants(&with_keys);
    ensure!(
        have == want,
        "{role} KMS grants with both keys set: {have:?}, expected {want:?}"
    );
    Ok(())
}

/// Each function logs to a group created here, with a retention, named as
/// Lambda names it.
fn check_log_groups(t: &Template) -> Check {
    let groups = t.of_type("AWS::Logs::LogGroup");
    for (id, function) in t.of_type("AWS::Serverless::Function") {
        let name = t
            .props(function)
            .get("FunctionName")
            .and_then(|n| render(n).into_iter().next())
            .ok_or_else(|| format!("{id} has no FunctionName: its log group name is unknown"))?;
        let expected = format!("/aws/lambda/{name}");
        let group = groups.iter().find(|(_, g)| {
            t.props(g)
                .get("LogGroupName")
                .is_some_and(|n| render(n) == [expected.clone()])
        });
        let (group_id, group) =
            group.ok_or_else(|| format!("{id} has no AWS::Logs::LogGroup named {expected}"))?;
        ensure!(
            t.props(group).get("RetentionInDays") == Some(&json!({"Ref": "LogRetentionDays"})),
            "{group_id} must set RetentionInDays: !Ref LogRetentionDays"
        );
    }
    ensure!(
        t.default_of("LogRetentionDays").as_deref() == Some("30"),
        "LogRetentionDays should default to 30"
    );
    Ok(())
}

/// The report bucket: encrypted, private, ACLs off, TLS only, reports
/// expiring, incomplete multipart uploads aborted.
fn check_report_bucket(t: &Template) -> Check {
    let buckets = t.of_type("AWS::S3::Bucket");
    ensure!(
        buckets.len() == 1,
        "expected one bucket (reports), found {}",
        buckets.len()
    );
    let (id, bucket) = buckets[0];
    let p = t.props(bucket);
    ensure!(
        p.pointer("/BucketEncryption/ServerSideEncryptionConfiguration/0/ServerSideEncryptionByDefault/SSEAlgorithm")
            .is_some(),
        "{id} must configure default encryption"
    );
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        ensure!(
            p.pointer(&format!("/PublicAccessBlockConfiguration/{flag}"))
                == Some(&Value::Bool(true)),
            "{id} PublicAccessBlockConfiguration.{flag} must be true"
        );
    }
    ensure!(
        p.pointer("/OwnershipControls/Rules/0/ObjectOwnership")
            .and_then(Value::as_str)
            == Some("BucketOwnerEnforced"),
        "{id} must use BucketOwnerEnforced"
    );
    let rules = p
        .pointer("/LifecycleConfiguration/Rules")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{id} has no lifecycle rules"))?;
    let enabled = |r: &&Value| r.get("Status").and_then(Value::as_str) == Some("Enabled");
    ensure!(
        rules.iter().filter(enabled).any(|r| {
            r.get("ExpirationInDays") == Some(&json!({"Ref": "ReportRetentionDays"}))
                && (r.get("Prefix") == Some(&json!({"Ref": "ReportPrefix"}))
                    || r.pointer("/Filter/Prefix") == Some(&json!({"Ref": "ReportPrefix"})))
        }),
        "{id} must expire objects under ReportPrefix after ReportRetentionDays"
    );
    ensure!(
        rules.iter().filter(enabled).any(|r| {
            r.pointer("/AbortIncompleteMultipartUpload/DaysAfterInitiation")
                .and_then(number)
                == Some(7.0)
        }),
        "{id} must abort incomplete multipart uploads after 7 days"
    );
    let tls_only = t
        .statements()
        .iter()
        .filter(|s| t.resource_type(&s.owner) == Some("AWS::S3::BucketPolicy"))
        .any(|s| {
            s.body.get("Effect").and_then(Value::as_str) == Some("Deny")
                && s.actions().iter().any(|a| a == "s3:*")
                && s.body.pointer("/Condition/Bool/aws:SecureTransport") == Some(&json!("false"))
                && s.resources().contains(&format!("${{{id}.Arn}}"))
                && s.resources().contains(&format!("${{{id}.Arn}}/*"))
        });
    ensure!(
        tls_only,
        "{id} needs a bucket policy denying requests without TLS"
    );
    Ok(())
}

/// Every function gets the configuration the code reads, from the right
/// parameters.
fn check_environment(t: &Template) -> Check {
    let common = [
        (
            "S3_FANOUT_SOURCE",
            json!({"Fn::Sub": "s3://${SourceBucket}/${SourcePrefix}"}),
        ),
        (
            "S3_FANOUT_DESTINATION",
            json!({"Fn::Sub": "s3://${DestinationBucket}/${DestinationPrefix}"}),
        ),
        ("S3_FANOUT_MODE", json!({"Ref": "Mode"})),
        ("S3_FANOUT_ALLOW_DELETE", json!({"Ref": "AllowDelete"})),
        ("S3_FANOUT_REPORT_BUCKET", json!({"Ref": "ReportBucket"})),
        ("S3_FANOUT_REPORT_PREFIX", json!({"Ref": "ReportPrefix"})),
        ("RUST_LOG", json!("info")),
    ];
    let queue = t.work_queue()?.0.to_string();
    for binary in FUNCTION_BINARIES {
        let (id, function) = t.function(binary)?;
        let env = t.environment(function);
        for (name, value) in &common {
            ensure!(
                env.get(*name) == Some(value),
                "{id} {name} must be {value}, is {:?}",
                env.get(*name)
            );
        }
        let needs_queue = binary != "s3-fanout-planner";
        ensure!(
            (env.get("S3_FANOUT_WORK_QUEUE_URL") == Some(&json!({"Ref": queue}))) == needs_queue,
            "{id} S3_FANOUT_WORK_QUEUE_URL must be !Ref {queue} exactly for the lister, copier and reporter"
        );
    }
    let (_, copier) = t.function(COPIER)?;
    ensure!(
        t.environment(copier).get("S3_FANOUT_COPY_CONCURRENCY")
            == Some(&json!({"Ref": "CopierTaskConcurrency"})),
        "the copier's S3_FANOUT_COPY_CONCURRENCY must !Ref CopierTaskConcurrency"
    );
    let defaults = [
        ("Mode", "etag"),
        ("ReportPrefix", "runs/"),
        ("SourcePrefix", ""),
        ("DestinationPrefix", ""),
        ("CopierTimeout", "900"),
        ("CopierBatchSize", "1"),
        ("CopierMaxConcurrency", "50"),
        ("CopierTaskConcurrency", "16"),
        ("ReportRetentionDays", "90"),
        ("ScheduleExpression", "cron(0 2 * * ? *)"),
        ("ScheduleEnabled", "false"),
    ];
    for (name, default) in defaults {
        ensure!(
            t.default_of(name).as_deref() == Some(default),
            "parameter {name} must default to {default:?}, is {:?}",
            t.default_of(name)
        );
    }
    ensure!(
        t.allowed_values("Mode") == ["missing", "size", "etag"],
        "Mode must allow missing, size and etag"
    );
    Ok(())
}

fn check_outputs(t: &Template) -> Check {
    let outputs = t.section("Outputs");
    for name in [
        "StateMachineArn",
        "WorkQueueUrl",
        "DeadLetterQueueUrl",
        "ReportBucketName",
        "ReportPrefix",
        "PlannerFunctionName",
        "ListerFunctionName",
        "CopierFunctionName",
        "ReporterFunctionName",
    ] {
        ensure!(outputs.contains_key(name), "output {name} is missing");
    }
    Ok(())
}

// ------------------------------------------------------------ tests

fn assert_ok(check: Check) {
    if let Err(reason) = check {
        panic!("{reason}");
    }
}

#[test]
fn work_queue_visibility_timeout_is_at_least_six_times_the_copier_timeout() {
    assert_ok(check_visibility_timeout(&load()));
}

#[test]
fn every_queue_uses_sqs_managed_encryption() {
    assert_ok(check_queues_encrypted(&load()));
}

#[test]
fn copier_reports_batch_item_failures_and_its_concurrency_is_a_parameter() {
    assert_ok(check_copier_event_source(&load()));
}

#[test]
fn no_s3_write_is_granted_on_a_wildcard() {
    assert_ok(check_no_wildcard_writes(&load()));
}

#[test]
fn execution_roles_name_every_resource() {
    assert_ok(check_no_star_resources(&load()));
}

#[test]
fn each_function_has_exactly_the_permissions_it_needs() {
    assert_ok(check_least_privilege(&load()));
}

#[test]
fn delete_object_is_granted_only_when_allow_delete_is_true() {
    assert_ok(check_delete_only_when_allowed(&load()));
}

#[test]
fn kms_permissions_follow_the_key_parameters() {
    assert_ok(check_kms(&load()));
}

#[test]
fn dead_letter_queue_has_an_alarm_on_visible_messages() {
    assert_ok(check_dead_letter_alarm(&load()));
}

#[test]
fn redrive_max_receive_count_is_the_copiers_max_receive_count() {
    assert_ok(check_max_receive_count(&load()));
}

#[test]
fn functions_are_rust_cargo_lambda_builds_on_al2023_with_the_architecture_parameter() {
    assert_ok(check_functions_build(&load()));
}

#[test]
fn state_machine_substitutes_every_placeholder_and_invokes_only_those_functions() {
    let placeholders = asl_placeholders().unwrap_or_else(|e| panic!("{e}"));
    assert_ok(check_state_machine(&load(), &placeholders));
}

#[test]
fn every_function_logs_to_a_log_group_with_retention() {
    assert_ok(check_log_groups(&load()));
}

#[test]
fn report_bucket_is_private_encrypted_tls_only_and_expires_reports() {
    assert_ok(check_report_bucket(&load()));
}

#[test]
fn functions_get_the_environment_the_code_reads() {
    assert_ok(check_environment(&load()));
}

#[test]
fn stack_outputs_name_what_operators_need() {
    assert_ok(check_outputs(&load()));
}

// ---------------------------------------------- the checks can fail

/// A copy of the template with `edit` applied to its JSON form.
fn broken(edit: impl FnOnce(&mut Value)) -> Template {
    let mut doc = load().doc;
    edit(&mut doc);
    Template::new(doc)
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("template has no {pointer}")) = value;
}

fn copier_id(doc: &Value) -> String {
    Template::new(doc.clone())
        .function(COPIER)
        .expect("copier")
        .0
        .to_string()
}

fn role_statements<'a>(doc: &'a mut Value, function: &str) -> &'a mut Vec<Value> {
    let t = Template::new(doc.clone());
    let (id, _) = t.function(function).expect("function");
    let role = t.function_role(id).expect("role").to_string();
    doc.pointer_mut(&format!(
        "/Resources/{role}/Properties/Policies/0/PolicyDocument/Statement"
    ))
    .and_then(Value::as_array_mut)
    .expect("role statements")
}

fn assert_caught(check: Check, what: &str) {
    assert!(check.is_err(), "the check did not notice: {what}");
}

#[test]
fn visibility_timeout_below_six_times_is_caught() {
    let (queue, _) = load()
        .work_queue()
        .map(|(q, v)| (q.to_string(), v.clone()))
        .unwrap();
    // A fixed value that is fine for the default timeout but not for others...
    let t = broken(|d| {
        set(
            d,
            &format!("/Resources/{queue}/Properties/VisibilityTimeout"),
            json!(5400),
        )
    });
    assert_ok(check_visibility_timeout(&t));
    // ...and one mapping entry below 6x.
    let t = broken(|d| {
        set(
            d,
            "/Mappings/CopierVisibility/300/VisibilityTimeout",
            json!(1500),
        )
    });
    assert_caught(
        check_visibility_timeout(&t),
        "visibility 5x timeout for CopierTimeout=300",
    );
    let t = broken(|d| {
        set(
            d,
            &format!("/Resources/{queue}/Properties/VisibilityTimeout"),
            json!(900),
        )
    });
    assert_caught(check_visibility_timeout(&t), "visibility 1x timeout");
    let t = broken(|d| {
        let copier = copier_id(d);
        set(
            d,
            &format!("/Resources/{copier}/Properties/Timeout"),
            json!(901),
        );
    });
    assert_caught(
        check_visibility_timeout(&t),
        "copier timeout above the mapped value",
    );
}

#[test]
fn unencrypted_queue_is_caught() {
    let t = broken(|d| {
        set(
            d,
            "/Resources/DeadLetterQueue/Properties/SqsManagedSseEnabled",
            json!(false),
        )
    });
    assert_caught(check_queues_encrypted(&t), "DLQ without SSE");
}

#[test]
fn copier_event_source_without_partial_failures_or_cap_is_caught() {
    let event = |d: &Value| {
        let t = Template::new(d.clone());
        let copier = copier_id(d);
        let name = t.resources()[&copier]["Properties"]["Events"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        format!("/Resources/{copier}/Properties/Events/{name}/Properties")
    };
    let t = broken(|d| {
        let e = event(d);
        set(d, &format!("{e}/FunctionResponseTypes"), json!([]));
    });
    assert_caught(check_copier_event_source(&t), "no ReportBatchItemFailures");
    let t = broken(|d| {
        let e = event(d);
        set(
            d,
            &format!("{e}/ScalingConfig/MaximumConcurrency"),
            json!(50),
        );
    });
    assert_caught(
        check_copier_event_source(&t),
        "hard-coded MaximumConcurrency",
    );
}

#[test]
fn wildcard_writes_and_star_resources_are_caught() {
    for resource in [
        json!("*"),
        json!("arn:aws:s3:::*"),
        json!("arn:aws:s3:::*/backup/*"),
        json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::dest-*/x"}),
    ] {
        let t = broken(|d| {
            role_statements(d, COPIER).push(json!({
                "Effect": "Allow", "Action": "s3:Put*", "Resource": resource.clone()
            }));
        });
        assert_caught(
            check_no_wildcard_writes(&t),
            &format!("s3:Put* on {resource}"),
        );
    }
    let t = broken(|d| {
        role_statements(d, "s3-fanout-reporter")
            .push(json!({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::*"}));
    });
    assert_caught(check_no_wildcard_writes(&t), "s3:* on every bucket");
    let t = broken(|d| {
        role_statements(d, "s3-fanout-planner")
            .push(json!({"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}));
    });
    assert_caught(check_no_star_resources(&t), "a read action on *");
    // A bucket parameter that could hold "*".
    let t = broken(|d| {
        set(
            d,
            "/Parameters/DestinationBucket/AllowedPattern",
            json!(".*"),
        )
    });
    assert_caught(
        check_no_wildcard_writes(&t),
        "unconstrained bucket parameter",
    );
    // SAM policies would bring managed policies with Resource "*".
    let t = broken(|d| {
        let copier = copier_id(d);
        set(d, &format!("/Resources/{copier}/Properties"), {
            let mut p = d["Resources"][&copier]["Properties"].clone();
            p["Policies"] = json!(["AWSLambdaSQSQueueExecutionRole"]);
            p
        });
    });
    assert_caught(check_no_star_resources(&t), "SAM Policies on a function");
}

#[test]
fn extra_or_missing_permissions_are_caught() {
    let t = broken(|d| {
        role_statements(d, "s3-fanout-lister").push(json!({
            "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucket}/${SourcePrefix}*"}
        }));
    });
    assert_caught(check_least_privilege(&t), "lister reading source objects");
    let t = broken(|d| {
        role_statements(d, COPIER).retain(|s| s.get("Sid") != Some(&json!("ReadSourceObjects")));
    });
    assert_caught(
        check_least_privilege(&t),
        "copier unable to read the source",
    );
}

#[test]
fn unconditional_delete_is_caught() {
    let t = broken(|d| {
        role_statements(d, COPIER).push(json!({
            "Effect": "Allow", "Action": "s3:DeleteObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DestinationBucket}/${DestinationPrefix}*"}
        }));
    });
    assert_caught(
        check_delete_only_when_allowed(&t),
        "DeleteObject without !If",
    );
    // Guarded, but by the wrong branch (granted when AllowDelete is false).
    let t = broken(|d| {
        for s in role_statements(d, COPIER).iter_mut() {
            if let Some(args) = s.get_mut("Fn::If").and_then(Value::as_array_mut)
                && args[0] == json!("DeleteAllowed")
            {
                args.swap(1, 2);
            }
        }
    });
    assert_caught(
        check_delete_only_when_allowed(&t),
        "DeleteObject on the false branch",
    );
    let t = broken(|d| set(d, "/Parameters/AllowDelete/Default", json!("true")));
    assert_caught(
        check_delete_only_when_allowed(&t),
        "AllowDelete defaulting to true",
    );
}

#[test]
fn unconditional_kms_is_caught() {
    let t = broken(|d| {
        role_statements(d, COPIER).push(json!({
            "Effect": "Allow", "Action": "kms:Decrypt",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/x"}
        }));
    });
    assert_caught(check_kms(&t), "KMS without a key configured");
}

#[test]
fn missing_or_wrong_dead_letter_alarm_is_caught() {
    let t = broken(|d| {
        let resources = d["Resources"].as_object_mut().unwrap();
        resources.retain(|_, r| r["Type"] != json!("AWS::CloudWatch::Alarm"));
    });
    assert_caught(check_dead_letter_alarm(&t), "no alarm");
    let t = broken(|d| {
        set(
            d,
            "/Resources/DeadLetterQueueAlarm/Properties/Threshold",
            json!(10),
        )
    });
    assert_caught(check_dead_letter_alarm(&t), "alarm only at 11 messages");
    let t = broken(|d| {
        set(
            d,
            "/Resources/DeadLetterQueueAlarm/Properties/Dimensions/0/Value",
            json!({"Fn::GetAtt": ["WorkQueue", "QueueName"]}),
        )
    });
    assert_caught(
        check_dead_letter_alarm(&t),
        "alarm on the work queue instead",
    );
}

#[test]
fn diverging_max_receive_counts_are_caught() {
    let t = broken(|d| {
        set(
            d,
            "/Resources/WorkQueue/Properties/RedrivePolicy/maxReceiveCount",
            json!(5),
        )
    });
    assert_caught(check_max_receive_count(&t), "hard-coded maxReceiveCount");
    let t = broken(|d| {
        let copier = copier_id(d);
        set(
            d,
            &format!(
                "/Resources/{copier}/Properties/Environment/Variables/S3_FANOUT_MAX_RECEIVE_COUNT"
            ),
            json!("5"),
        );
    });
    assert_caught(check_max_receive_count(&t), "hard-coded env");
}

#[test]
fn wrong_build_settings_are_caught() {
    let t = broken(|d| set(d, "/Globals/Function/Runtime", json!("provided.al2")));
    assert_caught(check_functions_build(&t), "provided.al2");
    let t = broken(|d| set(d, "/Parameters/Architecture/Default", json!("x86_64")));
    assert_caught(check_functions_build(&t), "x86_64 default");
    let t = broken(|d| {
        let copier = copier_id(d);
        set(
            d,
            &format!("/Resources/{copier}/Metadata/BuildMethod"),
            json!("makefile"),
        );
    });
    assert_caught(check_functions_build(&t), "makefile build");
    let t = broken(|d| {
        let copier = copier_id(d);
        set(
            d,
            &format!("/Resources/{copier}/Properties/CodeUri"),
            json!("../no-such-dir"),
        );
    });
    assert_caught(check_functions_build(&t), "CodeUri elsewhere");
}

#[test]
fn workspace_manifest_reader_reads_members_and_default_members() {
    let manifest = "[package]\nname = \"s3-fanout\"\n\n[workspace]\n# comment\nmembers = [\".\", \"functions/a\",\n  \"functions/b\"]\ndefault-members = [\"functions/a\"]\n\n[dependencies]\nx = \"1\"\n";
    assert_eq!(
        workspace_list(manifest, "members"),
        [".", "functions/a", "functions/b"]
    );
    assert_eq!(workspace_list(manifest, "default-members"), ["functions/a"]);
    assert!(workspace_list("[workspace]\nmembers = [\"a\"]\n", "default-members").is_empty());
    assert!(manifest_has_table(manifest, "package"));
}

#[test]
fn state_machine_mismatches_are_caught() {
    let asl: BTreeSet<String> = ASL_PLACEHOLDERS.iter().map(|s| s.to_string()).collect();
    let mut more = asl.clone();
    more.insert("CopierFunctionArn".into());
    assert_caught(
        check_state_machine(&load(), &more),
        "placeholder without substitution",
    );
    let t = broken(|d| {
        d["Resources"]["SyncStateMachine"]["Properties"]["Policies"][0]["Statement"][0]["Resource"]
            .as_array_mut()
            .unwrap()
            .push(json!({"Fn::GetAtt": ["CopierFunction", "Arn"]}));
    });
    assert_caught(
        check_state_machine(&t, &asl),
        "role invoking the copier too",
    );
    let t = broken(|d| {
        d["Resources"]["SyncStateMachine"]["Properties"]["Policies"][0]["Statement"][0]["Resource"]
            .as_array_mut()
            .unwrap()
            .retain(|r| r != &json!({"Fn::Sub": "${ReporterFunction.Arn}:*"}));
    });
    assert_caught(
        check_state_machine(&t, &asl),
        "role missing a qualified ARN",
    );
    let t = broken(|d| {
        set(
            d,
            "/Resources/SyncStateMachine/Properties/Type",
            json!("EXPRESS"),
        )
    });
    assert_caught(check_state_machine(&t, &asl), "express workflow");
}

#[test]
fn placeholder_scan_finds_substitutions_only() {
    let found = placeholders(
        r#"{"Resource": "${ListerFunctionArn}", "InputPath": "$.x", "Next": "${ReporterFunctionArn}"}"#,
    );
    let want: BTreeSet<String> = ["ListerFunctionArn", "ReporterFunctionArn"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
}

#[test]
fn short_form_tags_parse_to_long_form_intrinsics() {
    let doc = parse_template(
        "a: !Ref X\nb: !GetAtt Q.Arn\nc: !Sub s3://${B}/\nd: !If [C, 1, !Ref AWS::NoValue]\ne: !FindInMap [M, !Ref K, V]\n",
    );
    assert_eq!(doc["a"], json!({"Ref": "X"}));
    assert_eq!(doc["b"], json!({"Fn::GetAtt": ["Q", "Arn"]}));
    assert_eq!(doc["c"], json!({"Fn::Sub": "s3://${B}/"}));
    assert_eq!(
        doc["d"],
        json!({"Fn::If": ["C", 1, {"Ref": "AWS::NoValue"}]})
    );
    assert_eq!(doc["e"], json!({"Fn::FindInMap": ["M", {"Ref": "K"}, "V"]}));
}
