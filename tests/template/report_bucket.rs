//! The check on the bucket the runs write their reports to.

use serde_json::{Value, json};

use crate::Check;
use crate::model::Template;
use crate::values::number;

/// The report bucket: encrypted, private, ACLs off, TLS only, reports
/// expiring, incomplete multipart uploads aborted.
pub fn check_report_bucket(t: &Template) -> Check {
    let buckets = t.of_type("AWS::S3::Bucket");
    ensure!(
        buckets.len() == 1,
        "expected one bucket (reports), found {}",
        buckets.len()
    );
    let (id, bucket) = buckets[0];
    let p = t.props(bucket);
    ensure!(
        p.pointer("/BucketEncryption/ServerSideEncryptionConfiguration/0/ServerSideEncryptionByDefault/SSEAlgorithm")
            .is_some(),
        "{id} must configure default encryption"
    );
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        ensure!(
            p.pointer(&format!("/PublicAccessBlockConfiguration/{flag}"))
                == Some(&Value::Bool(true)),
            "{id} PublicAccessBlockConfiguration.{flag} must be true"
        );
    }
    ensure!(
        p.pointer("/OwnershipControls/Rules/0/ObjectOwnership")
            .and_then(Value::as_str)
            == Some("BucketOwnerEnforced"),
        "{id} must use BucketOwnerEnforced"
    );
    let rules = p
        .pointer("/LifecycleConfiguration/Rules")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{id} has no lifecycle rules"))?;
    let enabled = |r: &&Value| r.get("Status").and_then(Value::as_str) == Some("Enabled");
    ensure!(
        rules.iter().filter(enabled).any(|r| {
            r.get("ExpirationInDays") == Some(&json!({"Ref": "ReportRetentionDays"}))
                && (r.get("Prefix") == Some(&json!({"Ref": "ReportPrefix"}))
                    || r.pointer("/Filter/Prefix") == Some(&json!({"Ref": "ReportPrefix"})))
        }),
        "{id} must expire objects under ReportPrefix after ReportRetentionDays"
    );
    ensure!(
        rules.iter().filter(enabled).any(|r| {
            r.pointer("/AbortIncompleteMultipartUpload/DaysAfterInitiation")
                .and_then(number)
                == Some(7.0)
        }),
        "{id} must abort incomplete multipart uploads after 7 days"
    );
    let tls_only = t
        .statements()
        .iter()
        .filter(|s| t.resource_type(&s.owner) == Some("AWS::S3::BucketPolicy"))
        .any(|s| {
            s.body.get("Effect").and_then(Value::as_str) == Some("Deny")
                && s.actions().iter().any(|a| a == "s3:*")
                && s.body.pointer("/Condition/Bool/aws:SecureTransport") == Some(&json!("false"))
                && s.resources().contains(&format!("${{{id}.Arn}}"))
                && s.resources().contains(&format!("${{{id}.Arn}}/*"))
        });
    ensure!(
        tls_only,
        "{id} needs a bucket policy denying requests without TLS"
    );
    Ok(())
}
