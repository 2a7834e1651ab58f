//! The state machine: its definition's `${...}` placeholders, and the check
//! that the template substitutes each with a function of this stack (or the
//! run topic, see `notifications.rs`) and lets the workflow invoke exactly
//! those.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use crate::Check;
use crate::model::{Template, infra_dir};
use crate::values::{get_att, one_or_many};

/// The definition, relative to the template, as `DefinitionUri` names it.
pub const ASL_PATH: &str = "../statemachine/sync.asl.json";

/// The `${Name}` placeholders of an ASL definition (not `$.path` or
/// JSONata `{% %}` expressions).
pub fn placeholders(definition: &str) -> BTreeSet<String> {
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

/// The placeholders of `statemachine/sync.asl.json`, which must exist and
/// be JSON.
pub fn asl_placeholders() -> Result<BTreeSet<String>, String> {
    let path = infra_dir().join(ASL_PATH);
    let text =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str::<Value>(&text)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    Ok(placeholders(&text))
}

/// The one placeholder that is not a function: the run notification topic's
/// ARN, empty when RunNotifications is off (`notifications.rs` checks it).
pub const TOPIC_PLACEHOLDER: &str = "RunTopicArn";

/// (i) The state machine loads the ASL file, substitutes every placeholder
/// in it with a function of this stack, and may invoke exactly those.
pub fn check_state_machine(t: &Template, placeholders: &BTreeSet<String>) -> Check {
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
    for (key, value) in substitutions
        .iter()
        .filter(|(k, _)| *k != TOPIC_PLACEHOLDER)
    {
        let (function, attribute) =
            get_att(value).ok_or_else(|| format!("{id} substitution {key} is not a !GetAtt"))?;
        ensure!(
            attribute == "Arn" && t.resource_type(function) == Some("AWS::Serverless::Function"),
            "{id} substitution {key} must be a function's Arn, is {function}.{attribute}"
        );
        used.insert(function.to_string());
    }

    // The invoke permissions: exactly the functions used, unqualified and
    // qualified (":*" for versions and aliases). Publishing the run
    // notifications is the one other thing it may do (checked by
    // `notifications::check_run_topic`).
    let mut invocable = BTreeSet::new();
    for statement in t.statements_of(id).iter().filter(|s| s.allows()) {
        let actions = statement.actions();
        if actions == ["sns:Publish"] {
            continue;
        }
        ensure!(
            actions.iter().all(|a| a == "lambda:InvokeFunction"),
            "{id}'s role may only invoke functions and publish run notifications, statement grants {actions:?}"
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
