//! The nightly full sync: an EventBridge Scheduler schedule that starts the
//! sync state machine with the documented input, whose role can do nothing
//! else, and no leftover wording from when it was a placeholder.

use serde_json::{Value, json};

use crate::Check;
use crate::eval::params;
use crate::model::Template;
use crate::values::{get_att, number, one_or_many, scalar};

/// The execution input of the nightly run: a full sync comparing ETags,
/// then the VALIDATE phase (README, "The execution input").
pub fn nightly_input() -> Value {
    json!({"mode": "etag", "validate": true})
}

pub const SCHEDULER_SERVICE: &str = "scheduler.amazonaws.com";

/// The schedule: deployed whatever ScheduleEnabled says, at the
/// ScheduleExpression parameter (default `cron(0 2 * * ? *)`) in
/// ScheduleTimezone (default UTC), ENABLED exactly when ScheduleEnabled is
/// "true" (the default), starting the sync state machine with the nightly
/// input, with a retry policy and a role of its own.
pub fn check_nightly_schedule(t: &Template) -> Check {
    let schedules = t.of_type("AWS::Scheduler::Schedule");
    ensure!(
        schedules.len() == 1,
        "expected one AWS::Scheduler::Schedule, found {}",
        schedules.len()
    );
    let (id, schedule) = schedules[0];
    ensure!(
        schedule.get("Condition").is_none(),
        "{id} must be deployed whatever ScheduleEnabled says (its State disables it), has Condition {}",
        schedule["Condition"]
    );
    let p = t.props(schedule);
    for (field, parameter, default) in [
        (
            "ScheduleExpression",
            "ScheduleExpression",
            "cron(0 2 * * ? *)",
        ),
        ("ScheduleExpressionTimezone", "ScheduleTimezone", "UTC"),
    ] {
        ensure!(
            p.get(field) == Some(&json!({ "Ref": parameter })),
            "{id} {field} must !Ref {parameter}, is {:?}",
            p.get(field)
        );
        ensure!(
            t.default_of(parameter).as_deref() == Some(default),
            "{parameter} must default to {default:?}, is {:?}",
            t.default_of(parameter)
        );
    }
    ensure!(
        t.allowed_values("ScheduleEnabled") == ["true", "false"],
        "ScheduleEnabled must allow exactly \"true\" and \"false\""
    );
    let state = p.get("State").unwrap_or(&Value::Null);
    for (enabled, want) in [
        (None, "ENABLED"),
        (Some("true"), "ENABLED"),
        (Some("false"), "DISABLED"),
    ] {
        let values = enabled.map(|v| params(&[("ScheduleEnabled", v)]));
        let have = t.eval(state, &values.unwrap_or_default());
        ensure!(
            have == json!(want),
            "{id} State must be {want} with ScheduleEnabled {}, is {have}",
            enabled.unwrap_or("left at its default")
        );
    }
    // A string: YAML 1.1 reads a bare OFF as false.
    ensure!(
        p.pointer("/FlexibleTimeWindow/Mode") == Some(&json!("OFF")),
        "{id} FlexibleTimeWindow.Mode must be the string \"OFF\" (runs at the hour set), is {:?}",
        p.pointer("/FlexibleTimeWindow/Mode")
    );

    let machines = t.of_type("AWS::Serverless::StateMachine");
    ensure!(machines.len() == 1, "expected one state machine");
    let (machine, _) = machines[0];
    ensure!(
        p.pointer("/Target/Arn") == Some(&json!({ "Ref": machine })),
        "{id} Target.Arn must be !Ref {machine}, is {:?}",
        p.pointer("/Target/Arn")
    );
    let input = p
        .pointer("/Target/Input")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{id} Target.Input must be a JSON string"))?;
    let parsed: Value = serde_json::from_str(input)
        .map_err(|e| format!("{id} Target.Input is not JSON ({e}): {input}"))?;
    ensure!(
        parsed == nightly_input(),
        "{id} Target.Input must be {}, is {parsed}",
        nightly_input()
    );
    let attempts = p
        .pointer("/Target/RetryPolicy/MaximumRetryAttempts")
        .and_then(number);
    let age = p
        .pointer("/Target/RetryPolicy/MaximumEventAgeInSeconds")
        .and_then(number);
    ensure!(
        attempts.is_some_and(|a| (1.0..=185.0).contains(&a))
            && age.is_some_and(|a| (60.0..=86_400.0).contains(&a)),
        "{id} Target.RetryPolicy must retry a failed start (MaximumRetryAttempts 1-185, MaximumEventAgeInSeconds 60-86400), is {attempts:?}, {age:?}"
    );
    let role_arn = p.pointer("/Target/RoleArn").unwrap_or(&Value::Null);
    let (role, attribute) =
        get_att(role_arn).ok_or_else(|| format!("{id} Target.RoleArn must be a !GetAtt"))?;
    ensure!(
        attribute == "Arn" && t.resource_type(role) == Some("AWS::IAM::Role"),
        "{id} Target.RoleArn must be the Arn of an AWS::IAM::Role here, is {role}.{attribute}"
    );
    check_schedule_role(t, role, machine)
}

/// The schedule's role: only EventBridge Scheduler of this account may
/// assume it, and it may only start executions of the state machine.
fn check_schedule_role(t: &Template, role: &str, machine: &str) -> Check {
    let props = t.props(&t.resources()[role]);
    ensure!(
        props.get("ManagedPolicyArns").is_none(),
        "{role} must not attach managed policies"
    );
    let trust = props
        .pointer("/AssumeRolePolicyDocument/Statement")
        .map(one_or_many)
        .unwrap_or_default();
    ensure!(
        trust.len() == 1,
        "{role} must have one trust statement, has {}",
        trust.len()
    );
    let trust = trust[0];
    let services: Vec<String> = trust
        .pointer("/Principal/Service")
        .map(one_or_many)
        .unwrap_or_default()
        .into_iter()
        .filter_map(scalar)
        .collect();
    let actions: Vec<String> = trust
        .get("Action")
        .map(one_or_many)
        .unwrap_or_default()
        .into_iter()
        .filter_map(scalar)
        .collect();
    ensure!(
        trust.get("Effect") == Some(&json!("Allow"))
            && services == [SCHEDULER_SERVICE]
            && trust
                .get("Principal")
                .and_then(Value::as_object)
                .is_some_and(|p| p.len() == 1)
            && actions == ["sts:AssumeRole"],
        "{role} must be assumable by {SCHEDULER_SERVICE} only, trust statement {trust}"
    );
    ensure!(
        trust.pointer("/Condition/StringEquals/aws:SourceAccount")
            == Some(&json!({"Ref": "AWS::AccountId"})),
        "{role} trust must require StringEquals aws:SourceAccount = this account (confused deputy)"
    );
    let statements = t.statements_of(role);
    ensure!(!statements.is_empty(), "{role} has no policy statements");
    for statement in statements {
        ensure!(
            statement.allows()
                && statement.guards.is_empty()
                && statement.actions() == ["states:StartExecution"]
                && statement.resources() == [format!("${{{machine}}}")],
            "{role} may only states:StartExecution on {machine}, statement {}",
            statement.body
        );
    }
    Ok(())
}

/// Nothing in the deployed template (descriptions, metadata, outputs) still
/// calls the schedule a placeholder or defers it to a later change.
pub fn check_schedule_is_wired(t: &Template) -> Check {
    fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::String(s) => out.push(s),
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(object) => object.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(&t.doc, &mut all);
    for text in all {
        let lower = text.to_lowercase();
        for stale in [
            "placeholder",
            "later change",
            "later milestone",
            "not wired",
        ] {
            ensure!(
                !lower.contains(stale),
                "the template still says {stale:?}: {text:?}"
            );
        }
    }
    Ok(())
}
