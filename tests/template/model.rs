//! The template as a model: loading `infra/template.yaml`, its sections,
//! parameters and resources, SAM's `Globals` fallbacks, and the resources the
//! checks navigate by (each function by its binary, the SQS event source of
//! the copier and of the replicator, the queue each consumes and its
//! dead-letter queue).

use std::fs;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::values::{get_att, scalar};
use crate::yaml::parse_template;

pub const FUNCTION_BINARIES: [&str; 5] = [
    "s3-fanout-planner",
    "s3-fanout-lister",
    "s3-fanout-copier",
    "s3-fanout-reporter",
    "s3-fanout-replicator",
];
pub const COPIER: &str = "s3-fanout-copier";
/// Deployed only with `Replication=true`.
pub const REPLICATOR: &str = "s3-fanout-replicator";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn infra_dir() -> PathBuf {
    repo().join("infra")
}

pub fn load() -> Template {
    let path = infra_dir().join("template.yaml");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Template::new(parse_template(&text))
}

pub struct Template {
    pub doc: Value,
}

impl Template {
    pub fn new(doc: Value) -> Self {
        Template { doc }
    }

    pub fn section(&self, name: &str) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.doc
            .get(name)
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    pub fn resources(&self) -> &Map<String, Value> {
        self.section("Resources")
    }

    pub fn resource_type(&self, id: &str) -> Option<&str> {
        self.resources().get(id)?.get("Type")?.as_str()
    }

    pub fn of_type(&self, ty: &str) -> Vec<(&str, &Value)> {
        self.resources()
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .map(|(id, r)| (id.as_str(), r))
            .collect()
    }

    pub fn props<'a>(&self, resource: &'a Value) -> &'a Value {
        resource.get("Properties").unwrap_or(&Value::Null)
    }

    pub fn parameter(&self, name: &str) -> Option<&Value> {
        self.section("Parameters").get(name)
    }

    pub fn is_parameter(&self, name: &str) -> bool {
        self.parameter(name).is_some()
    }

    pub fn default_of(&self, name: &str) -> Option<String> {
        self.parameter(name)?.get("Default").and_then(scalar)
    }

    pub fn allowed_values(&self, name: &str) -> Vec<String> {
        self.parameter(name)
            .and_then(|p| p.get("AllowedValues"))
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(scalar).collect())
            .unwrap_or_default()
    }

    /// The function whose cargo-lambda build produces `binary`.
    pub fn function(&self, binary: &str) -> Result<(&str, &Value), String> {
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
    pub fn function_prop(&self, function: &Value, name: &str) -> Option<Value> {
        self.props(function)
            .get(name)
            .or_else(|| self.doc.pointer(&format!("/Globals/Function/{name}")))
            .cloned()
    }

    /// The function's environment: `Globals` variables overlaid with its own,
    /// as SAM merges them.
    pub fn environment(&self, function: &Value) -> Map<String, Value> {
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

    /// The SQS event source properties of the function built from `binary`
    /// (there must be exactly one).
    pub fn sqs_event(&self, binary: &str) -> Result<&Value, String> {
        let (id, function) = self.function(binary)?;
        let events: Vec<_> = self
            .props(function)
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

    /// The queue the copier consumes.
    pub fn work_queue(&self) -> Result<(&str, &Value), String> {
        self.consumed_queue(COPIER)
    }

    /// The queue the replicator consumes: S3 object events.
    pub fn event_queue(&self) -> Result<(&str, &Value), String> {
        self.consumed_queue(REPLICATOR)
    }

    /// The queue a function consumes: its SQS event's `Queue` must be
    /// `!GetAtt <queue>.Arn` of a queue in this template.
    pub fn consumed_queue(&self, binary: &str) -> Result<(&str, &Value), String> {
        let event = self.sqs_event(binary)?;
        let queue = event
            .get("Queue")
            .ok_or_else(|| format!("the {binary} SQS event has no Queue"))?;
        let (id, attribute) = get_att(queue)
            .ok_or_else(|| format!("the {binary} SQS event Queue is not a !GetAtt: {queue}"))?;
        ensure!(
            attribute == "Arn",
            "the {binary} SQS event Queue is {id}.{attribute}, not .Arn"
        );
        ensure!(
            self.resource_type(id) == Some("AWS::SQS::Queue"),
            "{binary} consumes {id}, which is not an AWS::SQS::Queue"
        );
        Ok((id, &self.resources()[id]))
    }

    /// The work queue's dead-letter queue, from its RedrivePolicy.
    pub fn dead_letter_queue(&self) -> Result<(&str, &Value), String> {
        let (work_id, _) = self.work_queue()?;
        self.dead_letter_queue_of(work_id)
    }

    /// A queue's dead-letter queue, from its RedrivePolicy.
    pub fn dead_letter_queue_of(&self, queue_id: &str) -> Result<(&str, &Value), String> {
        let queue = self
            .resources()
            .get(queue_id)
            .ok_or_else(|| format!("no resource {queue_id}"))?;
        let target = self
            .props(queue)
            .pointer("/RedrivePolicy/deadLetterTargetArn")
            .ok_or_else(|| format!("{queue_id} has no RedrivePolicy.deadLetterTargetArn"))?;
        let (id, attribute) = get_att(target)
            .ok_or_else(|| format!("{queue_id}'s dead-letter target is not a !GetAtt"))?;
        ensure!(
            attribute == "Arn" && self.resource_type(id) == Some("AWS::SQS::Queue"),
            "{queue_id}'s dead-letter target {id}.{attribute} is not a queue's Arn"
        );
        Ok((id, &self.resources()[id]))
    }
}
