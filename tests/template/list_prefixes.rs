//! Checks on `s3:ListBucket`: every grant names one bucket and carries an
//! `s3:prefix` condition for the stack's prefix of that bucket, so no role
//! lists what the stack does not own. See the comment above PlannerRole in
//! the template for the choice between StringLike and StringLikeIfExists.

use serde_json::Value;

use crate::Check;
use crate::eval::{Params, params};
use crate::iam::{Statement, glob, render};
use crate::model::Template;

/// The bucket ARNs (rendered) that a ListBucket may name, with the
/// parameter holding the stack's prefix in each.
const PREFIX_OF_BUCKET: [(&str, &str); 3] = [
    ("arn:${AWS::Partition}:s3:::${SourceBucket}", "SourcePrefix"),
    (
        "arn:${AWS::Partition}:s3:::${DestinationBucket}",
        "DestinationPrefix",
    ),
    ("${ReportBucket.Arn}", "ReportPrefix"),
];

/// Parameter sets the check runs under: the defaults (whole buckets, no
/// replication) and folders on both sides with every option on.
fn cases() -> Vec<Params> {
    vec![
        params(&[]),
        params(&[
            ("SourcePrefix", "data/"),
            ("DestinationPrefix", "backup/"),
            ("Replication", "true"),
            ("ReplicateDeletes", "true"),
            ("AllowDelete", "true"),
        ]),
        params(&[("SourcePrefix", "data/"), ("Replication", "true")]),
        params(&[("DestinationPrefix", "backup/")]),
    ]
}

fn active(t: &Template, statement: &Statement, p: &Params) -> bool {
    statement.allows()
        && t.resource_deployed(&statement.owner, p)
        && statement
            .guards
            .iter()
            .all(|(condition, taken)| t.condition(condition, p) == *taken)
}

/// Every s3:ListBucket grant deployed under any of [`cases`] names exactly
/// one bucket of the stack, and:
/// - with that bucket's prefix non-empty, is conditioned on `s3:prefix`
///   matching `<prefix>*` and nothing else;
/// - with it empty (the whole bucket is the stack's), has no `s3:prefix`
///   condition, which would refuse a listing that sends none;
/// - uses StringLikeIfExists exactly where the same role reads objects of
///   that bucket (a missing key must answer 404, which S3 decides by
///   ListBucket), and StringLike where it only lists.
pub fn check_list_bucket_prefixes(t: &Template) -> Check {
    for p in cases() {
        let statements: Vec<Statement> = t
            .statements()
            .into_iter()
            .filter(|s| active(t, s, &p))
            .collect();
        let mut seen = 0;
        for statement in &statements {
            if !statement.actions().iter().any(|a| glob(a, "s3:ListBucket")) {
                continue;
            }
            seen += 1;
            let owner = &statement.owner;
            let sid = statement.body.get("Sid").cloned().unwrap_or(Value::Null);
            let what = format!("{owner} {sid} (with {p:?})");
            let resources = statement.resources();
            ensure!(
                resources.len() == 1,
                "{what}: s3:ListBucket on {resources:?}; one bucket per statement, each with its own prefix condition"
            );
            let bucket = &resources[0];
            let (_, prefix_param) = PREFIX_OF_BUCKET
                .iter()
                .find(|(arn, _)| arn == bucket)
                .ok_or_else(|| format!("{what}: s3:ListBucket on {bucket}, not a bucket of the stack with a known prefix"))?;
            let prefix = p
                .get(*prefix_param)
                .cloned()
                .or_else(|| t.default_of(prefix_param))
                .unwrap_or_default();
            let body = t.eval(&statement.body, &p);
            let condition = body.get("Condition");
            if prefix.is_empty() {
                let mentions_prefix =
                    condition.is_some_and(|c| c.to_string().contains("s3:prefix"));
                ensure!(
                    !mentions_prefix,
                    "{what}: {prefix_param} is empty (the whole bucket), yet the grant has an s3:prefix condition {condition:?}"
                );
                continue;
            }
            let operators = condition
                .and_then(Value::as_object)
                .ok_or_else(|| format!("{what}: s3:ListBucket on {bucket} without a condition, though {prefix_param} is {prefix:?}"))?;
            ensure!(
                operators.len() == 1,
                "{what}: one condition operator expected, found {:?}",
                operators.keys().collect::<Vec<_>>()
            );
            let (operator, keys) = operators.iter().next().expect("one operator");
            ensure!(
                operator == "StringLike" || operator == "StringLikeIfExists",
                "{what}: condition operator {operator}; StringLike or StringLikeIfExists on s3:prefix expected"
            );
            let values = keys
                .get("s3:prefix")
                .map(render)
                .ok_or_else(|| format!("{what}: {operator} has no s3:prefix: {keys}"))?;
            let want = format!("${{{prefix_param}}}*");
            ensure!(
                keys.as_object().is_some_and(|k| k.len() == 1) && values == [want.clone()],
                "{what}: {operator} must be exactly s3:prefix {want:?}, is {keys}"
            );
            let reads_objects = statements.iter().any(|s| {
                &s.owner == owner
                    && s.actions().iter().any(|a| glob(a, "s3:GetObject"))
                    && s.resources()
                        .iter()
                        .any(|r| r.starts_with(&format!("{bucket}/")))
            });
            if reads_objects {
                ensure!(
                    operator == "StringLikeIfExists",
                    "{what}: {owner} reads objects of {bucket}, and S3 answers a missing key with 404 only to a caller allowed s3:ListBucket: use StringLikeIfExists, which that check passes whether it carries an s3:prefix or not (AWS does not say)"
                );
            } else {
                ensure!(
                    operator == "StringLike",
                    "{what}: {owner} only lists {bucket}: StringLike, not {operator}, which would also admit a listing that names no prefix"
                );
            }
        }
        ensure!(
            seen > 0,
            "no s3:ListBucket grant found with {p:?}: the check reads nothing"
        );
    }
    Ok(())
}
