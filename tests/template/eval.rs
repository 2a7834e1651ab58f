//! Evaluating intrinsics for given parameter values the way CloudFormation
//! would: parameter `Ref`s and their defaults, `Fn::FindInMap`, `Fn::If` and
//! the condition functions.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::Template;
use crate::values::{number, one_or_many, ref_name, scalar};

/// Parameter values for one evaluation; unset parameters take their
/// `Default`.
pub type Params = BTreeMap<String, String>;

pub fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Template {
    /// Evaluates intrinsics the way CloudFormation would for the given
    /// parameter values: parameter `Ref`s, `Fn::FindInMap`, `Fn::If` and
    /// the condition functions. References to resources and pseudo
    /// parameters stay as they are; `AWS::NoValue` disappears from lists.
    pub fn eval(&self, value: &Value, params: &Params) -> Value {
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

    pub fn truthy(&self, value: &Value, params: &Params) -> bool {
        self.eval(value, params) == Value::Bool(true)
    }

    pub fn condition(&self, name: &str, params: &Params) -> bool {
        let expression = self
            .section("Conditions")
            .get(name)
            .unwrap_or_else(|| panic!("condition {name} is not declared"));
        self.truthy(expression, params)
    }

    pub fn eval_number(&self, value: &Value, params: &Params) -> Option<f64> {
        number(&self.eval(value, params))
    }
}
