//! Reading values out of the template's JSON form: scalars the way
//! CloudFormation passes them around, fields that take one value or a list,
//! and `Ref` / `Fn::GetAtt` arguments.

use serde_json::Value;

/// A string, or the string form of a number or bool: CloudFormation hands
/// parameter values around as strings.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `x` or `[x, y]` as a list, as IAM allows for Action and Resource.
pub fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

pub fn ref_name(value: &Value) -> Option<&str> {
    value.get("Ref").and_then(Value::as_str)
}

pub fn get_att(value: &Value) -> Option<(&str, &str)> {
    let args = value.get("Fn::GetAtt")?.as_array()?;
    Some((args.first()?.as_str()?, args.get(1)?.as_str()?))
}
