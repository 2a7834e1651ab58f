//! IAM as the template states it: every policy statement with the `Fn::If`
//! branches it sits in, resources rendered in `${...}` form, IAM's glob and
//! the S3 write actions it can match, and which bucket an S3 resource names.

use serde_json::Value;

use crate::model::Template;
use crate::values::{get_att, one_or_many, ref_name, scalar};

/// One IAM policy statement, with the `Fn::If` branches it sits in:
/// `(condition, true)` for the true branch, `(condition, false)` for the
/// false one.
#[derive(Debug, Clone)]
pub struct Statement {
    pub owner: String,
    pub guards: Vec<(String, bool)>,
    pub body: Value,
}

impl Statement {
    pub fn allows(&self) -> bool {
        self.body.get("Effect").and_then(Value::as_str) == Some("Allow")
    }

    pub fn actions(&self) -> Vec<String> {
        self.body
            .get("Action")
            .map(|a| one_or_many(a).into_iter().filter_map(scalar).collect())
            .unwrap_or_default()
    }

    pub fn resources(&self) -> Vec<String> {
        self.body.get("Resource").map(render).unwrap_or_default()
    }
}

impl Template {
    /// Every IAM statement in the template: role, policy and managed-policy
    /// documents, SAM `Policies` documents, and bucket and queue policies.
    pub fn statements(&self) -> Vec<Statement> {
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
    pub fn statements_of(&self, owner: &str) -> Vec<Statement> {
        self.statements()
            .into_iter()
            .filter(|s| s.owner == owner)
            .collect()
    }

    /// The logical id of the role a function runs as: `Role` must be
    /// `!GetAtt <role>.Arn` of an `AWS::IAM::Role` in this template.
    pub fn function_role(&self, function_id: &str) -> Result<&str, String> {
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

pub fn collect_statements(
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
pub fn render(value: &Value) -> Vec<String> {
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
pub fn glob(pattern: &str, text: &str) -> bool {
    pub fn go(p: &[char], t: &[char]) -> bool {
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
pub fn grants_s3_write(action: &str) -> bool {
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

/// The bucket named by an S3 ARN or reference, if the value is one.
pub enum S3Target {
    /// A bucket created by this template.
    OwnBucket,
    /// A bucket named by a parameter.
    Parameter(String),
    /// A literal bucket name.
    Literal,
    /// Not recognizably a bucket of this stack: `*`, unknown forms.
    Unverifiable,
}

pub fn s3_target(t: &Template, resource: &str) -> S3Target {
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
