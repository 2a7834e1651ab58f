//! Conditions: the parameter values worth deploying in thought, and the
//! check that nothing they deploy refers to something they leave out.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::Check;
use crate::eval::{Params, params};
use crate::model::Template;
use crate::values::{get_att, one_or_many, ref_name};

/// The defaults, replication on, and every optional feature on (deletes of
/// both kinds, a source prefix and account, KMS keys, an alarm topic, run
/// notifications by email) with the schedule off.
pub fn parameter_sets() -> Vec<Params> {
    vec![
        Params::new(),
        params(&[("Replication", "true")]),
        params(&[
            ("Replication", "true"),
            ("ReplicateDeletes", "true"),
            ("ReplicateAllVersions", "true"),
            ("AllowDelete", "true"),
            ("ScheduleEnabled", "false"),
            ("SourcePrefix", "data/"),
            ("SourceAccountId", "111122223333"),
            (
                "SourceKmsKeyArn",
                "arn:aws:kms:us-east-1:111122223333:key/src",
            ),
            (
                "DestinationKmsKeyArn",
                "arn:aws:kms:us-east-1:111122223333:key/dst",
            ),
            ("AlarmTopicArn", "arn:aws:sns:us-east-1:111122223333:alarms"),
            ("RunNotifications", "true"),
            ("NotificationEmail", "ops@example.com"),
        ]),
    ]
}

/// The logical names a value refers to: `Ref`, `Fn::GetAtt`, and the
/// `${Name}` / `${Name.Attribute}` of `Fn::Sub` (not `${!Literal}`, not the
/// variables a `Fn::Sub` list defines itself).
pub fn references(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_references(value, &mut out);
    out
}

fn collect_references(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
        Value::Object(object) => {
            if let Some(name) = ref_name(value) {
                out.insert(name.to_string());
            } else if let Some((resource, _)) = get_att(value) {
                out.insert(resource.to_string());
            } else if let Some(sub) = object.get("Fn::Sub").filter(|_| object.len() == 1) {
                let (text, local) = match sub {
                    Value::Array(args) => (args.first(), args.get(1)),
                    other => (Some(other), None),
                };
                let local = local.and_then(Value::as_object);
                for name in sub_names(text.and_then(Value::as_str).unwrap_or_default()) {
                    if !local.is_some_and(|l| l.contains_key(&name)) {
                        out.insert(name);
                    }
                }
                if let Some(local) = local {
                    local.values().for_each(|v| collect_references(v, out));
                }
            } else {
                object.values().for_each(|v| collect_references(v, out));
            }
        }
        _ => {}
    }
}

/// The names in a `Fn::Sub` template: `${A}` and `${A.B}` give `A`.
fn sub_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('}') else { break };
        let inner = &rest[..end];
        if !inner.starts_with('!') {
            // Pseudo parameters keep their "::"; an attribute follows a ".".
            let name = if inner.starts_with("AWS::") {
                inner
            } else {
                inner.split('.').next().unwrap_or(inner)
            };
            out.push(name.to_string());
        }
        rest = &rest[end + 1..];
    }
    out
}

/// With each of [`parameter_sets`], every reference of a deployed resource
/// or output (its `Fn::If` branches evaluated, `DependsOn` included) names
/// a parameter, a pseudo parameter or a deployed resource. CloudFormation
/// refuses a stack whose conditions leave out something still referenced:
/// a replicator output without `Condition`, a rule aimed at a queue that
/// is not there, a role naming a log group deployed under another
/// condition.
pub fn check_references_resolve(t: &Template) -> Check {
    for p in parameter_sets() {
        let deployed = t.deployed(&p);
        for section in ["Resources", "Outputs"] {
            for (id, entry) in deployed.section(section) {
                let mut names = references(&t.eval(entry, &p));
                if let Some(depends_on) = entry.get("DependsOn") {
                    names.extend(
                        one_or_many(depends_on)
                            .into_iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string),
                    );
                }
                for name in names {
                    ensure!(
                        name.starts_with("AWS::")
                            || t.is_parameter(&name)
                            || deployed.resources().contains_key(&name),
                        "with parameters {p:?}, {section}.{id} refers to {name}, which they do not deploy \
                         (give {id} the Condition of {name})"
                    );
                }
            }
        }
    }
    Ok(())
}
