//! Run notifications: the optional SNS topic the state machine publishes
//! each run's ending to, and the `sns:publish` states of the definition.
//!
//! The topic is wired in three places that must agree: the template
//! creates it (and its email subscription, and the role's sns:Publish) only
//! with RunNotifications=true; the `RunTopicArn` substitution is its ARN
//! then and empty otherwise; and the definition publishes exactly when that
//! substitution is not empty, on every way a run can end, without letting a
//! failed publish change how it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde_json::{Map, Value, json};

use crate::Check;
use crate::eval::{Params, params};
use crate::model::{Template, infra_dir};
use crate::state_machine::{ASL_PATH, TOPIC_PLACEHOLDER};
use crate::values::ref_name;

/// The service integration that publishes to SNS.
pub const PUBLISH: &str = "arn:aws:states:::sns:publish";
/// Where the definition keeps the notification while it decides.
pub const NOTIFY_PATH: &str = "$.notify";
pub const TOPIC_PATH: &str = "$.notify.topic";

pub fn load_asl() -> Value {
    let path = infra_dir().join(ASL_PATH);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn on() -> Params {
    params(&[("RunNotifications", "true")])
}

fn with_email() -> Params {
    params(&[
        ("RunNotifications", "true"),
        ("NotificationEmail", "ops@example.com"),
    ])
}

/// The topic exists only with RunNotifications=true, encrypted (a KMS key
/// named), with an email subscription only when NotificationEmail is set as
/// well; the state machine's `RunTopicArn` substitution is that topic's
/// ARN then and empty otherwise; and its role may publish to exactly that
/// topic, only then. Nothing else in the stack may publish to SNS.
pub fn check_run_topic(t: &Template) -> Check {
    let machines = t.of_type("AWS::Serverless::StateMachine");
    ensure!(machines.len() == 1, "expected one state machine");
    let (machine, props) = (machines[0].0, t.props(machines[0].1));
    let substitution = props
        .pointer(&format!("/DefinitionSubstitutions/{TOPIC_PLACEHOLDER}"))
        .ok_or_else(|| format!("{machine} does not substitute ${{{TOPIC_PLACEHOLDER}}}"))?;

    for (p, enabled, email) in [
        (Params::new(), false, false),
        (
            params(&[("NotificationEmail", "ops@example.com")]),
            false,
            false,
        ),
        (on(), true, false),
        (with_email(), true, true),
    ] {
        let deployed = t.deployed(&p);
        let topics = deployed.of_type("AWS::SNS::Topic");
        let subscriptions = deployed.of_type("AWS::SNS::Subscription");
        let publish: Vec<_> = t
            .statements_of(machine)
            .into_iter()
            .filter(|s| {
                s.guards
                    .iter()
                    .all(|(c, taken)| t.condition(c, &p) == *taken)
            })
            .filter(|s| s.allows() && s.actions().iter().any(|a| a.starts_with("sns:")))
            .collect();
        let value = t.eval(substitution, &p);
        if !enabled {
            ensure!(
                topics.is_empty() && subscriptions.is_empty(),
                "with {p:?} no topic or subscription may be deployed"
            );
            ensure!(
                value == json!(""),
                "with {p:?} ${{{TOPIC_PLACEHOLDER}}} must be empty (no publish), is {value}"
            );
            ensure!(
                publish.is_empty(),
                "with {p:?} {machine}'s role may not publish: {:?}",
                publish.iter().map(|s| &s.body).collect::<Vec<_>>()
            );
            continue;
        }
        ensure!(
            topics.len() == 1,
            "with {p:?} exactly one SNS topic, found {}",
            topics.len()
        );
        let (topic, resource) = topics[0];
        let key = t.props(resource).get("KmsMasterKeyId");
        ensure!(
            key.is_some_and(|k| k.as_str() != Some("")),
            "{topic} must be encrypted at rest (KmsMasterKeyId)"
        );
        ensure!(
            ref_name(&value) == Some(topic),
            "with {p:?} ${{{TOPIC_PLACEHOLDER}}} must be !Ref {topic}, is {value}"
        );
        ensure!(
            publish.len() == 1
                && publish[0].actions() == ["sns:Publish"]
                && publish[0].resources() == [format!("${{{topic}}}")],
            "with {p:?} {machine}'s role must have one statement, sns:Publish on {topic}: {:?}",
            publish.iter().map(|s| &s.body).collect::<Vec<_>>()
        );
        if email {
            ensure!(
                subscriptions.len() == 1,
                "with {p:?} one email subscription, found {}",
                subscriptions.len()
            );
            let sub = t.eval(t.props(subscriptions[0].1), &p);
            ensure!(
                sub["Protocol"] == "email"
                    && sub["Endpoint"] == "ops@example.com"
                    && ref_name(&sub["TopicArn"]) == Some(topic),
                "the subscription must send {topic} to NotificationEmail by email: {sub}"
            );
        } else {
            ensure!(
                subscriptions.is_empty(),
                "with {p:?} (no NotificationEmail) no subscription"
            );
        }
    }
    for statement in t.statements().iter().filter(|s| s.allows()) {
        let sns: Vec<String> = statement
            .actions()
            .into_iter()
            .filter(|a| a.to_lowercase().starts_with("sns:") || a == "*")
            .collect();
        ensure!(
            sns.is_empty() || statement.owner == machine,
            "{} may {sns:?}: only the state machine publishes",
            statement.owner
        );
    }
    Ok(())
}

// ------------------------------------------------------------ the workflow

fn states(asl: &Value) -> Result<&Map<String, Value>, String> {
    asl.get("States")
        .and_then(Value::as_object)
        .ok_or_else(|| "the definition has no States".to_string())
}

fn state_type(state: &Value) -> &str {
    state
        .get("Type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn is_terminal(state: &Value) -> bool {
    matches!(state_type(state), "Succeed" | "Fail")
}

fn is_publish(state: &Value) -> bool {
    state_type(state) == "Task" && state.get("Resource").and_then(Value::as_str) == Some(PUBLISH)
}

/// Where a Choice goes when the topic is empty, if it is one that asks:
/// a rule `$.notify.topic` StringEquals "".
fn skip_when_empty(state: &Value) -> Option<&str> {
    if state_type(state) != "Choice" {
        return None;
    }
    state
        .get("Choices")?
        .as_array()?
        .iter()
        .find(|rule| {
            rule.get("Variable").and_then(Value::as_str) == Some(TOPIC_PATH)
                && rule.get("StringEquals") == Some(&json!(""))
        })?
        .get("Next")?
        .as_str()
}

/// The states a state may go to next: Next, Default, each choice's and
/// each catcher's Next. With `topic` given, a choice on the topic goes only
/// where that value sends it: its skip when empty, elsewhere when not.
fn successors<'a>(state: &'a Value, topic: Option<bool>) -> Vec<&'a str> {
    let next = |v: &'a Value| v.get("Next").and_then(Value::as_str);
    if let (Some(skip), Some(set)) = (skip_when_empty(state), topic) {
        if !set {
            return vec![skip];
        }
        let rules = state["Choices"].as_array().into_iter().flatten();
        return rules
            .filter(|r| r.get("Variable").and_then(Value::as_str) != Some(TOPIC_PATH))
            .filter_map(next)
            .chain(state.get("Default").and_then(Value::as_str))
            .collect();
    }
    let mut out: Vec<&str> = next(state).into_iter().collect();
    out.extend(state.get("Default").and_then(Value::as_str));
    for list in ["Choices", "Catch"] {
        out.extend(
            state
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(next),
        );
    }
    out
}

/// The top-level states reachable from StartAt with the topic set or
/// empty, not going through `blocked` states.
fn reachable(
    asl: &Value,
    topic_set: bool,
    blocked: &BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    let states = states(asl)?;
    let start = asl
        .get("StartAt")
        .and_then(Value::as_str)
        .ok_or("no StartAt")?;
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(name) = todo.pop() {
        if blocked.contains(&name) || !seen.insert(name.clone()) {
            continue;
        }
        let state = states
            .get(&name)
            .ok_or_else(|| format!("a transition goes to {name}, which is no state"))?;
        todo.extend(
            successors(state, Some(topic_set))
                .into_iter()
                .map(String::from),
        );
    }
    Ok(seen)
}

/// The `$.` paths a text reads (a path, or an intrinsic over paths), not
/// the context object's `$$.` ones.
fn paths_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "_.$[]".contains(c)))
        .filter(|token| token.starts_with("$.") || *token == "$")
        .map(str::to_string)
        .collect()
}

/// The `$.` paths a Parameters template reads: its `*.$` fields, nested
/// ones included.
fn paths_read(value: &Value) -> Vec<String> {
    match value {
        Value::Object(object) => object
            .iter()
            .flat_map(|(key, v)| match v.as_str() {
                Some(text) if key.ends_with(".$") => paths_in(text),
                _ => paths_read(v),
            })
            .collect(),
        Value::Array(items) => items.iter().flat_map(paths_read).collect(),
        _ => Vec::new(),
    }
}

/// Whether reading `path` can fail where reading all of `read` does not:
/// it is one of them, or a parent of one.
fn covered(path: &str, read: &[String]) -> bool {
    read.iter().any(|r| {
        r == path
            || r.strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

/// Who goes to each state, over every transition.
fn predecessors(asl: &Value) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, state) in states(asl)? {
        for next in successors(state, None) {
            out.entry(next.to_string()).or_default().push(name.clone());
        }
    }
    Ok(out)
}

/// The definition notifies on every ending, and only with a topic:
///
/// - with the topic set, no terminal state (Succeed or Fail) is reachable
///   without going through a publish state, and every one is reachable;
/// - with it empty, no publish state is reachable, and every terminal is;
/// - each publish state ends where it was going whatever happens: it
///   publishes `$.notify` to `$.notify.topic` and reads nothing else, keeps
///   the state (ResultPath null, so the Fail's CausePath and Synced's
///   output read what they read without notifications), is retried, and
///   catches every error into `$.notify` going on to its own Next, a
///   terminal state. Reading only what the Pass before it just wrote
///   matters: a missing path is a States.Runtime error, which no Catch
///   catches, and the run would fail with that instead of its own ending;
/// - the choice before it skips to that same terminal on an empty topic,
///   and comes from one Pass that puts `${RunTopicArn}` at `$.notify.topic`
///   with a subject SNS accepts and a message naming the run
///   (`$$.Execution.Name`), its status (SUCCEEDED for a Succeed, FAILED for
///   a Fail) and its outcome (the terminal's name), reading no path its
///   terminal state does not read (for the same reason).
pub fn check_asl_notifications(asl: &Value) -> Check {
    let states = states(asl)?;
    let terminals: BTreeSet<String> = states
        .iter()
        .filter(|(_, s)| is_terminal(s))
        .map(|(n, _)| n.clone())
        .collect();
    let publishes: BTreeSet<String> = states
        .iter()
        .filter(|(_, s)| is_publish(s))
        .map(|(n, _)| n.clone())
        .collect();
    ensure!(!publishes.is_empty(), "no {PUBLISH} state");

    let with_topic = reachable(asl, true, &BTreeSet::new())?;
    let unnotified = reachable(asl, true, &publishes)?;
    let without_topic = reachable(asl, false, &BTreeSet::new())?;
    for terminal in &terminals {
        ensure!(
            !unnotified.contains(terminal),
            "with a topic, {terminal} can be reached without publishing"
        );
        ensure!(
            with_topic.contains(terminal) && without_topic.contains(terminal),
            "{terminal} is not reachable with the topic set and empty alike"
        );
    }
    for publish in &publishes {
        ensure!(
            !without_topic.contains(publish),
            "without a topic, {publish} is still reached"
        );
    }

    let before = predecessors(asl)?;
    for name in &publishes {
        let state = &states[name];
        let terminal = state
            .get("Next")
            .and_then(Value::as_str)
            .filter(|n| states.get(*n).is_some_and(is_terminal))
            .ok_or_else(|| format!("{name} must go on to a terminal state"))?;
        let parameters = state.get("Parameters").cloned().unwrap_or(Value::Null);
        ensure!(
            parameters["TopicArn.$"] == TOPIC_PATH
                && parameters.get("Message.$").is_some()
                && parameters.get("Subject.$").is_some(),
            "{name} must publish to {TOPIC_PATH} the Message and Subject under {NOTIFY_PATH}: {parameters}"
        );
        let foreign: Vec<String> = paths_read(&parameters)
            .into_iter()
            .filter(|p| !p.starts_with(&format!("{NOTIFY_PATH}.")))
            .collect();
        ensure!(
            foreign.is_empty(),
            "{name} may read only {NOTIFY_PATH}, reads {foreign:?}: a missing path fails the run with States.Runtime"
        );
        ensure!(
            state.get("ResultPath") == Some(&Value::Null),
            "{name} must keep the state (ResultPath null): {terminal} reads it"
        );
        ensure!(
            state
                .get("Retry")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty()),
            "{name} must retry a failed publish"
        );
        let catchers = state
            .get("Catch")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        ensure!(
            catchers.iter().any(|c| c["ErrorEquals"]
                .as_array()
                .is_some_and(|e| e.contains(&json!("States.ALL")))),
            "{name} must catch States.ALL: a failed publish may not fail the run"
        );
        for catcher in &catchers {
            ensure!(
                catcher["Next"] == terminal,
                "{name} must go on to {terminal} after a failed publish, goes to {}",
                catcher["Next"]
            );
            let path = catcher["ResultPath"].as_str().unwrap_or("$");
            ensure!(
                path.starts_with(&format!("{NOTIFY_PATH}.")),
                "{name}'s Catch must put the error under {NOTIFY_PATH}, not {path}: {terminal} reads the rest"
            );
        }

        // The choice before it, and the Pass before that.
        let choices = before.get(name).cloned().unwrap_or_default();
        ensure!(
            choices.len() == 1 && skip_when_empty(&states[&choices[0]]) == Some(terminal),
            "{name} must be reached only from a choice that skips to {terminal} on an empty topic, is reached from {choices:?}"
        );
        let choice = &choices[0];
        let passes = before.get(choice).cloned().unwrap_or_default();
        ensure!(
            passes.len() == 1 && state_type(&states[&passes[0]]) == "Pass",
            "{choice} must be reached only from the Pass that prepares the notice, is reached from {passes:?}"
        );
        let pass = &states[&passes[0]];
        let notice = &pass["Parameters"];
        ensure!(
            pass["ResultPath"] == NOTIFY_PATH,
            "{} must put the notice at {NOTIFY_PATH}",
            passes[0]
        );
        ensure!(
            notice["topic"] == format!("${{{TOPIC_PLACEHOLDER}}}"),
            "{} must set topic to ${{{TOPIC_PLACEHOLDER}}}",
            passes[0]
        );
        let subject = notice["subject"].as_str().unwrap_or_default();
        ensure!(
            !subject.is_empty()
                && subject.len() <= 100
                && subject
                    .chars()
                    .all(|c| c.is_ascii() && !c.is_ascii_control()),
            "{}'s subject must be 1-100 printable ASCII characters (SNS refuses others): {subject:?}",
            passes[0]
        );
        let status = if state_type(&states[terminal]) == "Succeed" {
            "SUCCEEDED"
        } else {
            "FAILED"
        };
        let message = &notice["message"];
        let ending = &states[terminal];
        let read: Vec<String> = ["CausePath", "ErrorPath", "OutputPath", "InputPath"]
            .iter()
            .filter_map(|key| ending.get(*key).and_then(Value::as_str))
            .flat_map(paths_in)
            .collect();
        for path in paths_read(notice) {
            ensure!(
                covered(&path, &read),
                "{} reads {path}, which {terminal} does not read: where it is missing, the run would fail with States.Runtime instead of ending in {terminal}",
                passes[0]
            );
        }
        ensure!(
            message["run_id.$"] == "$$.Execution.Name"
                && message["status"] == status
                && message["outcome"] == terminal,
            "{}'s message must carry run_id.$ $$.Execution.Name, status {status} and outcome {terminal}: {message}",
            passes[0]
        );
    }
    Ok(())
}
