//! The check on the run counters' table (`src/serverless/counters.rs`).

use serde_json::{Value, json};

use crate::Check;
use crate::model::Template;

/// The run counters: one on-demand table keyed `pk`/`sk` (strings), its
/// items expiring by `expires_at`, encrypted; and no DynamoDB action
/// granted on anything else.
pub fn check_run_table(t: &Template) -> Check {
    let tables = t.of_type("AWS::DynamoDB::Table");
    ensure!(
        tables.len() == 1,
        "expected one DynamoDB table (RunTable), found {}",
        tables.len()
    );
    let (id, table) = tables[0];
    ensure!(
        id == "RunTable",
        "the table is {id}, the code's env names RunTable"
    );
    let p = t.props(table);
    ensure!(
        p.get("BillingMode") == Some(&json!("PAY_PER_REQUEST")),
        "{id} must be on-demand: a run's writes come in bursts no provisioned capacity fits"
    );
    let keys: Vec<(String, String)> = p
        .get("KeySchema")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|k| {
            Some((
                k.get("AttributeName")?.as_str()?.to_owned(),
                k.get("KeyType")?.as_str()?.to_owned(),
            ))
        })
        .collect();
    ensure!(
        keys == [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())],
        "{id} must be keyed pk (HASH), sk (RANGE), is {keys:?}"
    );
    for name in ["pk", "sk"] {
        let string = p
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|a| a == &json!({"AttributeName": name, "AttributeType": "S"}));
        ensure!(string, "{id}: {name} must be a string attribute");
    }
    ensure!(
        p.get("TimeToLiveSpecification")
            == Some(&json!({"AttributeName": "expires_at", "Enabled": true})),
        "{id} must expire items by expires_at (the code writes it): runs would pile up forever"
    );
    ensure!(
        p.pointer("/SSESpecification/SSEEnabled") == Some(&json!(true)),
        "{id} must be encrypted at rest"
    );
    for statement in t.statements().iter().filter(|s| s.allows()) {
        let dynamodb: Vec<String> = statement
            .actions()
            .into_iter()
            .filter(|a| a.starts_with("dynamodb:") || a == "*")
            .collect();
        if dynamodb.is_empty() {
            continue;
        }
        for resource in statement.resources() {
            ensure!(
                resource == "${RunTable.Arn}",
                "{}: {dynamodb:?} on {resource}: DynamoDB only on the run table",
                statement.owner
            );
        }
    }
    Ok(())
}
