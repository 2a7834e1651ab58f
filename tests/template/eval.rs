//! Evaluating intrinsics for given parameter values the way CloudFormation
//! would: parameter `Ref`s and their defaults, `Fn::FindInMap`, `Fn::If` and
//! the condition functions; and which resources and outputs those values
//! deploy (a `Condition` on a resource or output).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

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
    /// parameters stay as they are; `AWS::NoValue` disappears from lists and
    /// takes its key out of objects.
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
                    // Fn::GetAtt, Fn::Sub, ...: left as written.
                    intrinsic if intrinsic.starts_with("Fn::") => value.clone(),
                    _ => self.eval_object(object, params),
                }
            }
            Value::Object(object) => self.eval_object(object, params),
            other => other.clone(),
        }
    }

    /// A plain object (not an intrinsic): each value evaluated, keys whose
    /// value is `AWS::NoValue` left out.
    fn eval_object(&self, object: &Map<String, Value>, params: &Params) -> Value {
        Value::Object(
            object
                .iter()
                .map(|(k, v)| (k.clone(), self.eval(v, params)))
                .filter(|(_, v)| ref_name(v) != Some("AWS::NoValue"))
                .collect(),
        )
    }

    /// Whether a resource or output is deployed with these parameter values:
    /// it has no `Condition`, or its condition holds.
    pub fn is_deployed(&self, entry: &Value, params: &Params) -> bool {
        match entry.get("Condition").and_then(Value::as_str) {
            Some(condition) => self.condition(condition, params),
            None => true,
        }
    }

    /// Whether the resource `id` exists and is deployed with these values.
    pub fn resource_deployed(&self, id: &str, params: &Params) -> bool {
        self.resources()
            .get(id)
            .is_some_and(|r| self.is_deployed(r, params))
    }

    /// The template as these parameter values deploy it: resources and
    /// outputs whose `Condition` is false left out, everything else as
    /// written (intrinsics unevaluated, so the checks read it as usual).
    pub fn deployed(&self, params: &Params) -> Template {
        let mut doc = self.doc.clone();
        for section in ["Resources", "Outputs"] {
            let kept: Map<String, Value> = self
                .section(section)
                .iter()
                .filter(|(_, entry)| self.is_deployed(entry, params))
                .map(|(id, entry)| (id.clone(), entry.clone()))
                .collect();
            if let Some(object) = doc.as_object_mut()
                && object.contains_key(section)
            {
                object.insert(section.to_string(), Value::Object(kept));
            }
        }
        Template::new(doc)
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
