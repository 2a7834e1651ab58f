//! Checks on IAM: no S3 write on a wildcard, no `Resource: "*"` in an
//! execution role, exactly the permissions each function needs, deletes only
//! when AllowDelete (the copier) or Replication and ReplicateDeletes (the
//! replicator) are true, and KMS only for the keys configured.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::Check;
use crate::eval::{Params, params};
use crate::iam::{S3Target, Statement, glob, grants_s3_write, render, s3_target};
use crate::model::{COPIER, REPLICATOR, Template};
use crate::values::{one_or_many, scalar};

/// S3's bucket naming rule. A bucket parameter constrained by it cannot
/// carry an IAM wildcard (`*`, `?`) into a resource ARN.
pub const BUCKET_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$";

/// (d) No statement grants an S3 write on `*` or a wildcard bucket, and no
/// function or state machine statement uses `Resource: "*"` at all.
pub fn check_no_wildcard_writes(t: &Template) -> Check {
    for statement in t.statements().iter().filter(|s| s.allows()) {
        let owner = &statement.owner;
        ensure!(
            statement.body.get("NotAction").is_none()
                && statement.body.get("NotResource").is_none(),
            "{owner}: an Allow with NotAction or NotResource grants everything else"
        );
        let writes: Vec<String> = statement
            .actions()
            .into_iter()
            .filter(|a| a == "*" || grants_s3_write(a))
            .collect();
        if writes.is_empty() {
            continue;
        }
        for resource in statement.resources() {
            match s3_target(t, &resource) {
                S3Target::OwnBucket | S3Target::Literal => {}
                S3Target::Parameter(name) => {
                    let pattern = t
                        .parameter(&name)
                        .and_then(|p| p.get("AllowedPattern"))
                        .and_then(Value::as_str);
                    ensure!(
                        pattern == Some(BUCKET_NAME_PATTERN),
                        "{owner}: {writes:?} on {resource}: bucket parameter {name} must have AllowedPattern {BUCKET_NAME_PATTERN} so it cannot be a wildcard"
                    );
                }
                S3Target::Unverifiable => {
                    return Err(format!(
                        "{owner}: {writes:?} granted on {resource}, which is not one named bucket"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The roles functions and state machines run as, with who runs as them.
pub fn execution_policy_owners(t: &Template) -> Result<Vec<String>, String> {
    let mut owners = Vec::new();
    for (id, function) in t.of_type("AWS::Serverless::Function") {
        ensure!(
            t.props(function).get("Policies").is_none(),
            "{id} uses SAM Policies: SAM then also attaches AWS managed policies with Resource \"*\"; give it an explicit role"
        );
        owners.push(t.function_role(id)?.to_string());
    }
    for (id, _) in t.of_type("AWS::Serverless::StateMachine") {
        owners.push(id.to_string());
    }
    // Roles no function runs as (the schedule's) are held to the same rules.
    for (id, _) in t.of_type("AWS::IAM::Role") {
        if !owners.iter().any(|o| o == id) {
            owners.push(id.to_string());
        }
    }
    Ok(owners)
}

pub fn check_no_star_resources(t: &Template) -> Check {
    let owners = execution_policy_owners(t)?;
    for owner in &owners {
        if let Some(role) = t.resources().get(owner.as_str()) {
            ensure!(
                t.props(role).get("ManagedPolicyArns").is_none(),
                "{owner} attaches managed policies, whose statements this test cannot see"
            );
        }
        let statements = t.statements_of(owner);
        ensure!(!statements.is_empty(), "{owner} has no policy statements");
        for statement in statements {
            ensure!(
                statement.body.get("Resource").is_some(),
                "{owner}: statement {} has no Resource",
                statement.body
            );
            for resource in statement.resources() {
                ensure!(
                    resource != "*" && resource != "<unknown>",
                    "{owner}: statement {} uses Resource {resource}",
                    statement.body.get("Sid").unwrap_or(&Value::Null)
                );
            }
        }
    }
    // Standalone policies attached to those roles would add statements too.
    for ty in ["AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"] {
        ensure!(
            t.of_type(ty).is_empty(),
            "{ty} resources are not expected: put statements in the role they belong to"
        );
    }
    Ok(())
}

/// (e) s3:DeleteObject on the synced buckets is granted only where the
/// parameters allow deletes: to the copier's role exactly when AllowDelete
/// is true, to the replicator's exactly when Replication and
/// ReplicateDeletes (or ReplicateAllVersions, whose delete markers are
/// DeleteObjects) are true, to no other role ever (the reporter's
/// clean-up of ledgers in the report bucket is the least-privilege check's); and each function's environment tells its code
/// the same. Every combination of the three parameters is evaluated, with
/// resource conditions (the replicator's role exists only with
/// Replication=true) and the `Fn::If` branches each statement sits in.
pub fn check_delete_only_when_allowed(t: &Template) -> Check {
    let copier_role = t.function_role(t.function(COPIER)?.0)?.to_string();
    let (replicator_id, replicator) = t.function(REPLICATOR)?;
    let replicator_role = t.function_role(replicator_id)?.to_string();
    let flags = [
        "AllowDelete",
        "Replication",
        "ReplicateDeletes",
        "ReplicateAllVersions",
    ];
    for bits in 0..(1u32 << flags.len()) {
        let values: Vec<(&str, &str)> = flags
            .iter()
            .enumerate()
            .map(|(i, flag)| {
                (
                    *flag,
                    if bits & (1 << i) != 0 {
                        "true"
                    } else {
                        "false"
                    },
                )
            })
            .collect();
        let p = params(&values);
        let on = |flag: &str| p.get(flag).is_some_and(|v| v == "true");
        let mut deleting = BTreeSet::new();
        for statement in t.statements().iter().filter(|s| s.allows()) {
            let deletes = statement
                .actions()
                .iter()
                .any(|a| glob(a, "s3:DeleteObject") || glob(a, "s3:DeleteObjectVersion"))
                && !statement
                    .resources()
                    .iter()
                    .all(|r| r.starts_with("${ReportBucket.Arn}/"));
            let active = t.resource_deployed(&statement.owner, &p)
                && statement
                    .guards
                    .iter()
                    .all(|(condition, taken)| t.condition(condition, &p) == *taken);
            if deletes && active {
                deleting.insert(statement.owner.clone());
            }
        }
        let mut allowed = BTreeSet::new();
        if on("AllowDelete") {
            allowed.insert(copier_role.clone());
        }
        // Appending a delete marker to a history is a DeleteObject too.
        if on("Replication") && (on("ReplicateDeletes") || on("ReplicateAllVersions")) {
            allowed.insert(replicator_role.clone());
        }
        ensure!(
            deleting == allowed,
            "with {values:?}, s3:DeleteObject is granted to {deleting:?}; it must be granted to {allowed:?}"
        );
        if t.is_deployed(replicator, &p) {
            let env = t.eval(&Value::Object(t.environment(replicator)), &p);
            // Deletes of objects only with ReplicateDeletes; markers
            // appended only with ReplicateAllVersions.
            for (var, flag) in [
                ("S3_FANOUT_REPLICATE_DELETES", "ReplicateDeletes"),
                ("S3_FANOUT_REPLICATE_ALL_VERSIONS", "ReplicateAllVersions"),
            ] {
                let told = env.get(var).and_then(scalar);
                let want = (on("Replication") && on(flag)).to_string();
                ensure!(
                    told.as_deref() == Some(want.as_str()),
                    "with {values:?}, the replicator's {var} is {told:?}, not {want}: code and parameters must agree"
                );
            }
        }
    }
    for flag in flags {
        ensure!(
            t.default_of(flag).as_deref() == Some("false"),
            "{flag} must default to \"false\""
        );
    }
    let (_, copier) = t.function(COPIER)?;
    ensure!(
        t.environment(copier).get("S3_FANOUT_ALLOW_DELETE") == Some(&json!({"Ref": "AllowDelete"})),
        "the copier's S3_FANOUT_ALLOW_DELETE must !Ref AllowDelete, so code and policy agree"
    );
    Ok(())
}

/// With Replication and ReplicateAllVersions, the replicator's role may
/// read both buckets' versioning, list both sides' versions under the
/// stack's prefixes, read a source version's tags and HEAD a destination
/// version; without ReplicateAllVersions, none of that.
pub fn check_replicator_versions(t: &Template) -> Check {
    let (id, _) = t.function(REPLICATOR)?;
    let role = t.function_role(id)?.to_string();
    let src = "arn:${AWS::Partition}:s3:::${SourceBucket}";
    let dst = "arn:${AWS::Partition}:s3:::${DestinationBucket}";
    let want_on: BTreeSet<(String, String)> = [
        ("s3:GetBucketVersioning", src.to_owned()),
        ("s3:GetBucketVersioning", dst.to_owned()),
        ("s3:ListBucketVersions", src.to_owned()),
        ("s3:ListBucketVersions", dst.to_owned()),
        (
            "s3:GetObjectVersionTagging",
            format!("{src}/${{SourcePrefix}}*"),
        ),
        (
            "s3:GetObjectVersion",
            format!("{dst}/${{DestinationPrefix}}*"),
        ),
    ]
    .into_iter()
    .map(|(a, r)| (a.to_owned(), r))
    .collect();
    for all_versions in ["true", "false"] {
        let p = params(&[
            ("Replication", "true"),
            ("ReplicateAllVersions", all_versions),
        ]);
        let mut have = BTreeSet::new();
        for statement in t.statements_of(&role) {
            let guarded_on = !statement.guards.is_empty()
                && statement
                    .guards
                    .iter()
                    .all(|(condition, taken)| t.condition(condition, &p) == *taken);
            if !guarded_on {
                continue;
            }
            for action in statement.actions() {
                for resource in statement.resources() {
                    if action.contains("Version") {
                        have.insert((action.clone(), resource));
                    }
                }
            }
        }
        let want = if all_versions == "true" {
            want_on.clone()
        } else {
            BTreeSet::new()
        };
        ensure!(
            have == want,
            "with ReplicateAllVersions={all_versions}, the replicator's version grants are {have:?}, not {want:?}"
        );
    }
    ensure!(
        t.default_of("ReplicateAllVersions").as_deref() == Some("false"),
        "ReplicateAllVersions must default to \"false\""
    );
    Ok(())
}

/// (action, resource) pairs an IAM role is granted.
pub type Grants = Vec<(String, String)>;

/// The permissions each function's role must have, no more, no less (KMS
/// and delete statements, which depend on parameters, are checked apart).
pub fn check_least_privilege(t: &Template) -> Check {
    let src = "arn:${AWS::Partition}:s3:::${SourceBucket}";
    let src_objects = "arn:${AWS::Partition}:s3:::${SourceBucket}/${SourcePrefix}*";
    let dst = "arn:${AWS::Partition}:s3:::${DestinationBucket}";
    let dst_objects = "arn:${AWS::Partition}:s3:::${DestinationBucket}/${DestinationPrefix}*";
    let report = "${ReportBucket.Arn}";
    let report_objects = "${ReportBucket.Arn}/${ReportPrefix}*";
    let queue = "${WorkQueue.Arn}";
    // Range tasks: the planner starts each listing pass there, listers
    // take them (the event source polls with the lister's role) and hand
    // on the next, the reporter reads the depth.
    let ranges = "${RangeQueue.Arn}";
    // The run counters: listers and copiers count (inside transactions,
    // authorised by the actions they hold), the reporter reads.
    let table = "${RunTable.Arn}";
    let count = [("dynamodb:PutItem", table), ("dynamodb:UpdateItem", table)];
    let (event_queue_id, _) = t.event_queue()?;
    let events = format!("${{{event_queue_id}.Arn}}");
    let event_dlq = format!("${{{}.Arn}}", t.dead_letter_queue_of(event_queue_id)?.0);
    let events = events.as_str();
    let event_dlq = event_dlq.as_str();
    let log = |id: &str| format!("${{{id}LogGroup.Arn}}");
    let logs = |id: &str| {
        vec![
            ("logs:CreateLogStream".to_string(), log(id)),
            ("logs:PutLogEvents".to_string(), log(id)),
        ]
    };
    let grants = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, r)| ((*a).to_string(), (*r).to_string()))
            .collect()
    };
    let report_rw = [
        ("s3:GetObject", report_objects),
        ("s3:PutObject", report_objects),
    ];
    let expected: [(&str, &str, Grants); 5] = [
        ("s3-fanout-planner", "Planner", {
            // The destination too: the preflight lists one key of each.
            let mut g = grants(&[
                ("s3:ListBucket", src),
                ("s3:ListBucket", dst),
                // The replicator's journal is found by listing, and a
                // ledger not written yet must read as 404.
                ("s3:ListBucket", report),
                // all_versions runs are refused unless both sides are
                // versioned.
                ("s3:GetBucketVersioning", src),
                ("s3:GetBucketVersioning", dst),
                ("sqs:SendMessage", ranges),
                // Ranges counted sent; VALIDATE reads the ranges done.
                ("dynamodb:Query", table),
            ]);
            g.extend(grants(&report_rw));
            g.extend(grants(&count));
            g
        }),
        ("s3-fanout-lister", "Lister", {
            let mut g = grants(&[
                ("s3:ListBucket", src),
                // A run as of a time lists the source's versions, after
                // asking whether it is versioned.
                ("s3:ListBucketVersions", src),
                ("s3:GetBucketVersioning", src),
                ("s3:ListBucket", dst),
                // all_versions: both histories listed and aligned, the
                // destination's newest copy HEADed for its origin.
                ("s3:ListBucketVersions", dst),
                ("s3:GetObjectVersion", dst_objects),
                // A KMS pair is proven by a HEAD of each side, which is
                // s3:GetObject.
                ("s3:GetObject", src_objects),
                ("s3:GetObject", dst_objects),
                ("sqs:SendMessage", queue),
                ("sqs:ReceiveMessage", ranges),
                ("sqs:DeleteMessage", ranges),
                ("sqs:GetQueueAttributes", ranges),
                ("sqs:ChangeMessageVisibility", ranges),
                ("sqs:SendMessage", ranges),
                // GetObject of a checkpoint not written yet must be a 404.
                ("s3:ListBucket", report),
                // A range's copies, read when its listing ends.
                ("dynamodb:BatchGetItem", table),
                // The run's stop mark (cancel, fail-fast).
                ("dynamodb:GetItem", table),
            ]);
            g.extend(grants(&report_rw));
            g.extend(grants(&count));
            g
        }),
        ("s3-fanout-copier", "Copier", {
            let mut g = grants(&[
                ("sqs:ReceiveMessage", queue),
                ("sqs:DeleteMessage", queue),
                ("sqs:GetQueueAttributes", queue),
                ("sqs:ChangeMessageVisibility", queue),
                ("sqs:SendMessage", queue),
                ("s3:GetObject", src_objects),
                ("s3:GetObjectVersion", src_objects),
                ("s3:GetObjectTagging", src_objects),
                // The tags of a version (as_of runs).
                ("s3:GetObjectVersionTagging", src_objects),
                ("s3:ListBucket", src),
                ("s3:PutObject", dst_objects),
                ("s3:PutObjectTagging", dst_objects),
                ("s3:AbortMultipartUpload", dst_objects),
                ("s3:GetObject", dst_objects),
                ("s3:ListBucketMultipartUploads", dst),
                // A history task lists and aligns its key's histories.
                ("s3:ListBucketVersions", src),
                ("s3:ListBucketVersions", dst),
                ("s3:GetObjectVersion", dst_objects),
                ("s3:ListBucket", report),
                // A range whose copies are all done, sent to VALIDATE.
                ("sqs:SendMessage", ranges),
                ("dynamodb:BatchGetItem", table),
                // The run's stop mark, read; written by fail-fast (PutItem
                // and UpdateItem, as counting needs anyway).
                ("dynamodb:GetItem", table),
            ]);
            g.extend(grants(&report_rw));
            g.extend(grants(&count));
            g
        }),
        ("s3-fanout-reporter", "Reporter", {
            // Queue depth: whether a run with missing results is still copying.
            let mut g = grants(&[
                ("s3:ListBucket", report),
                ("sqs:GetQueueAttributes", queue),
                ("sqs:GetQueueAttributes", ranges),
                // Switching a ledger deletes its old chunks and the
                // journal it folded; nothing else in the report bucket.
                (
                    "s3:DeleteObject",
                    "${ReportBucket.Arn}/${ReportPrefix}ledgers/*",
                ),
                // Progress and totals; the markers of lost batches.
                ("dynamodb:Query", table),
                ("dynamodb:BatchGetItem", table),
                // Whether the run was stopped, and why.
                ("dynamodb:GetItem", table),
            ]);
            g.extend(grants(&report_rw));
            g
        }),
        // No run state: replication only appends to ledgers' journals.
        (
            REPLICATOR,
            "Replicator",
            grants(&[
                ("sqs:ReceiveMessage", events),
                ("sqs:DeleteMessage", events),
                ("sqs:GetQueueAttributes", events),
                ("sqs:ChangeMessageVisibility", events),
                // Events no retry can fix go to the dead-letter queue at once.
                ("sqs:SendMessage", event_dlq),
                ("s3:GetObject", src_objects),
                ("s3:GetObjectVersion", src_objects),
                ("s3:GetObjectTagging", src_objects),
                // A HEAD of a missing key must be a 404, not a 403, on both
                // sides; and the one-key listing after a 412.
                ("s3:ListBucket", src),
                ("s3:ListBucket", dst),
                ("s3:PutObject", dst_objects),
                ("s3:PutObjectTagging", dst_objects),
                ("s3:AbortMultipartUpload", dst_objects),
                ("s3:GetObject", dst_objects),
                ("s3:ListBucketMultipartUploads", dst),
                (
                    "s3:PutObject",
                    "${ReportBucket.Arn}/${ReportPrefix}ledgers/*/journal-*",
                ),
            ]),
        ),
    ];
    for (binary, prefix, mut want) in expected {
        let (id, _) = t.function(binary)?;
        let role = t.function_role(id)?;
        want.extend(logs(prefix));
        let want: BTreeSet<(String, String)> = want.into_iter().collect();
        let mut have = BTreeSet::new();
        for statement in t.statements_of(role) {
            ensure!(
                statement.allows(),
                "{role} has a non-Allow statement {}",
                statement.body
            );
            if !statement.guards.is_empty() {
                continue; // conditional grants: delete and KMS checks
            }
            for action in statement.actions() {
                for resource in statement.resources() {
                    have.insert((action.clone(), resource));
                }
            }
        }
        let extra: Vec<_> = have.difference(&want).collect();
        let missing: Vec<_> = want.difference(&have).collect();
        ensure!(
            extra.is_empty() && missing.is_empty(),
            "{role} ({binary}): grants beyond least privilege {extra:?}, missing {missing:?}"
        );
    }
    Ok(())
}

/// SSE-KMS: with key ARNs given, the copier and the replicator may decrypt
/// the source and encrypt (GenerateDataKey + Decrypt) the destination;
/// without, nothing.
pub fn check_kms(t: &Template) -> Check {
    for binary in [COPIER, REPLICATOR] {
        check_kms_of(t, binary)?;
    }
    Ok(())
}

fn check_kms_of(t: &Template, binary: &str) -> Check {
    let (id, _) = t.function(binary)?;
    let role = t.function_role(id)?;
    let key_params = ["SourceKmsKeyArn", "DestinationKmsKeyArn"];
    for name in key_params {
        ensure!(
            t.default_of(name).as_deref() == Some(""),
            "{name} must default to empty (no KMS)"
        );
    }
    let with_keys = params(&[
        (
            "SourceKmsKeyArn",
            "arn:aws:kms:us-east-1:111122223333:key/src",
        ),
        (
            "DestinationKmsKeyArn",
            "arn:aws:kms:us-east-1:111122223333:key/dst",
        ),
    ]);
    let active = |statement: &Statement, p: &Params| {
        statement
            .guards
            .iter()
            .all(|(c, taken)| t.condition(c, p) == *taken)
    };
    let kms_grants = |p: &Params| -> BTreeSet<(String, String)> {
        t.statements_of(role)
            .iter()
            .filter(|s| active(s, p))
            .flat_map(|s| {
                let body = t.eval(&s.body, p);
                let actions: Vec<String> = one_or_many(body.get("Action").unwrap_or(&Value::Null))
                    .into_iter()
                    .filter_map(scalar)
                    .filter(|a| a.starts_with("kms:"))
                    .collect();
                let resources: Vec<String> = body.get("Resource").map(render).unwrap_or_default();
                actions
                    .into_iter()
                    .flat_map(move |a| resources.clone().into_iter().map(move |r| (a.clone(), r)))
            })
            .collect()
    };
    ensure!(
        kms_grants(&Params::new()).is_empty(),
        "{role} has KMS permissions although no key is configured"
    );
    let want: BTreeSet<(String, String)> = [
        ("kms:Decrypt", "arn:aws:kms:us-east-1:111122223333:key/src"),
        (
            "kms:GenerateDataKey",
            "arn:aws:kms:us-east-1:111122223333:key/dst",
        ),
        ("kms:Decrypt", "arn:aws:kms:us-east-1:111122223333:key/dst"),
    ]
    .iter()
    .map(|(a, r)| ((*a).to_string(), (*r).to_string()))
    .collect();
    let have = kms_grants(&with_keys);
    ensure!(
        have == want,
        "{role} KMS grants with both keys set: {have:?}, expected {want:?}"
    );
    Ok(())
}
