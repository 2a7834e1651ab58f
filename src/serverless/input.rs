//! The execution input of the state machine, validated once by the planner
//! into a [`RunManifest`](super::contract::RunManifest) that every later
//! step reads.
//!
//! The input is a [`SyncSpec`] in JSON (the CLI's options, snake_case) plus a
//! few run-level fields. Unknown fields are refused, not ignored: a typo in
//! `"delet": true` must not become a nightly run without deletions.

use serde_json::Value;

use crate::base::error::SyncError;
use crate::model::location::{Location, S3Location};
use crate::model::options::{DiffMode, SyncOptions, SyncSpec, ledger_name};
use crate::serverless::contract::RunSettings;
use crate::serverless::env::StackConfig;

/// Fields of [`SyncSpec`] the serverless runtime takes from the stack, not
/// from an execution, with the reason given to whoever sets them.
const STACK_OWNED: &[(&str, &str)] = &[
    ("report", "reports go to the stack's report bucket"),
    (
        "state",
        "the ledger of proven pairs lives in the stack's report bucket, under ledgers/ (set \"no_state\": true to keep none)",
    ),
    (
        "endpoint_url",
        "endpoints are the stack's (S3_FANOUT_ENDPOINT_URL)",
    ),
    ("source_endpoint_url", "endpoints are the stack's"),
    ("dest_endpoint_url", "endpoints are the stack's"),
    ("profile", "functions use their execution role"),
    (
        "concurrency",
        "copy concurrency is the stack's CopierMaxConcurrency and CopierTaskConcurrency parameters",
    ),
    (
        "max_delete",
        "a global deletion limit cannot be enforced across parallel shards; use the CLI, or a dry run first",
    ),
    ("dry_run", "use `s3-fanout sync --dry-run` to plan"),
    (
        "list_concurrency",
        "a run lists its shards in parallel instead: shard_concurrency",
    ),
    (
        "max_requests_per_second",
        "each Lambda would cap only itself; the fleet's rate is the stack's CopierMaxConcurrency",
    ),
];

/// Parse and validate an execution input against the stack's configuration.
/// Every refusal is a [`SyncError::Config`] naming the field.
pub fn resolve_input(
    input: &Value,
    stack: &StackConfig,
) -> Result<(SyncSpec, RunSettings, SyncOptions), SyncError> {
    let Value::Object(fields) = input else {
        return Err(SyncError::Config(format!(
            "the execution input must be a JSON object, got {input}"
        )));
    };
    let spec_fields = serde_json::to_value(SyncSpec::default()).expect("a spec serialises");
    let settings_fields = serde_json::to_value(RunSettings::default()).expect("settings serialise");
    let known = |name: &str| spec_fields.get(name).is_some() || settings_fields.get(name).is_some();
    for name in fields.keys() {
        if name == "run_id" || name == "comment" {
            continue;
        }
        if let Some((_, why)) = STACK_OWNED.iter().find(|(field, _)| field == name) {
            return Err(SyncError::Config(format!(
                "execution input: {name:?} cannot be set per execution: {why}"
            )));
        }
        if !known(name) {
            return Err(SyncError::Config(format!(
                "execution input: unknown field {name:?} (fields are the CLI's options in snake_case, e.g. \"mode\", \"include\", \"delete\")"
            )));
        }
    }
    let bad = |what: &str, e: serde_json::Error| {
        SyncError::Config(format!("execution input: {what}: {e}"))
    };
    let mut spec: SyncSpec =
        serde_json::from_value(input.clone()).map_err(|e| bad("invalid options", e))?;
    let settings: RunSettings =
        serde_json::from_value(input.clone()).map_err(|e| bad("invalid run settings", e))?;
    if settings.shard_concurrency == 0 || settings.max_shards == 0 {
        return Err(SyncError::Config(
            "execution input: shard_concurrency and max_shards must be at least 1".into(),
        ));
    }

    (spec.source, spec.destination) = resolve_locations(&spec.source, &spec.destination, stack)?;
    keep_stack_encryption(fields, &spec, stack)?;
    stack.apply_encryption(&mut spec);
    if fields.get("mode").is_none()
        && let Some(mode) = stack.mode
    {
        spec.mode = mode;
    }
    if fields.get("include").is_none() {
        spec.include = stack.include.clone();
    }
    if fields.get("exclude").is_none() {
        spec.exclude = stack.exclude.clone();
    }
    if spec.delete && !stack.allow_delete {
        return Err(SyncError::Config(
            "execution input: \"delete\": true, but this stack was deployed with AllowDelete=false, so its copier may not delete".into(),
        ));
    }
    if spec.all_versions && !stack.allow_delete {
        // A delete marker is appended by a DeleteObject (on a versioned
        // bucket it removes no bytes), which only an AllowDelete stack's
        // copier may send.
        return Err(SyncError::Config(
            "execution input: \"all_versions\": true appends delete markers with s3:DeleteObject, and this stack was deployed with AllowDelete=false, so its copier may not".into(),
        ));
    }
    stack.apply_client(&mut spec);
    spec.state = ledger_state(&spec, stack)?;
    let options = SyncOptions::try_from(spec.clone())?;
    options
        .buckets()
        .map_err(|e| SyncError::Config(format!("execution input: {e}")))?;
    Ok((spec, settings, options))
}

/// Where the run's ledger of proven pairs lives: the report bucket, under
/// `REPORT_PREFIX/ledgers/NAME/`, named for the two locations as the CLI's
/// are, so every run between them (nightly, manual) shares one and no
/// other pair's. `None` where the run keeps none (`no_state`, or a mode
/// that never compares ETags).
pub(crate) fn ledger_state(
    spec: &SyncSpec,
    stack: &StackConfig,
) -> Result<Option<String>, SyncError> {
    if spec.no_state || spec.mode != DiffMode::Etag {
        return Ok(None);
    }
    let (source, destination) = (
        spec.source.parse::<Location>()?,
        spec.destination.parse::<Location>()?,
    );
    Ok(Some(format!(
        "s3://{}/{}{LEDGERS}/{}/",
        stack.report_bucket,
        stack.report_prefix,
        ledger_name(&source, &destination)
    )))
}

/// The report prefix's folder of ledgers, beside the runs' folders (no run
/// may take its name).
pub const LEDGERS: &str = "ledgers";

/// The run's source and destination: the stack's, or narrowed to one
/// sub-prefix of them, never outside (the functions' IAM policies name the
/// stack's buckets and prefixes).
///
/// Both sides must stay lined up: a relative key means the same object on
/// either side, so narrowing one side narrows the other by the same
/// sub-prefix. Otherwise `{"source": "s3://src/data/2024/", "delete": true}`
/// would compare 2024's objects with the whole destination, delete most of
/// it, and write 2024's objects at its root. An input naming both sides must
/// narrow them alike. A side the stack has no default for is taken as given.
fn resolve_locations(
    source: &str,
    destination: &str,
    stack: &StackConfig,
) -> Result<(String, String), SyncError> {
    let source = Side::new("source", source, stack.source.as_deref())?;
    let destination = Side::new("destination", destination, stack.destination.as_deref())?;
    let narrowing = match (&source.narrowing, &destination.narrowing) {
        (Some(s), Some(d)) if s != d => {
            return Err(SyncError::Config(format!(
                "execution input: source {} and destination {} do not line up: they narrow this stack's source and destination by {s:?} and {d:?}, so keys would land elsewhere than under their source's place (and \"delete\" would remove what lies outside it); narrow both by the same sub-prefix, or name one side and the other follows",
                source.given, destination.given,
            )));
        }
        (s, d) => s.clone().or(d.clone()).unwrap_or_default(),
    };
    Ok((
        source.resolve(&narrowing)?,
        destination.resolve(&narrowing)?,
    ))
}

/// One side of a run, as the input gives it and the stack bounds it.
struct Side<'a> {
    name: &'static str,
    given: &'a str,
    stack: Option<S3Location>,
    /// What the input adds to the stack's prefix: `Some("2024/")` for
    /// `s3://src/data/2024` under a stack's `s3://src/data/` (S3Location
    /// makes both folders, so a trailing slash changes nothing), `None`
    /// when the input leaves this side to the stack or the stack has none.
    narrowing: Option<String>,
}

impl<'a> Side<'a> {
    fn new(name: &'static str, given: &'a str, stack: Option<&str>) -> Result<Self, SyncError> {
        let stack = stack
            .map(|url| {
                url.parse::<S3Location>().map_err(|e| {
                    SyncError::Config(format!("this stack's {name} is not an S3 location: {e}"))
                })
            })
            .transpose()?;
        let narrowing = match (&stack, given.is_empty()) {
            (Some(stack), false) => {
                let location: S3Location = given.parse()?;
                match location.prefix.strip_prefix(&stack.prefix) {
                    Some(rest) if location.bucket == stack.bucket => Some(rest.to_owned()),
                    _ => {
                        return Err(SyncError::Config(format!(
                            "execution input: {name} {given} is outside this stack's {name} {stack}; its functions may only touch that"
                        )));
                    }
                }
            }
            _ => None,
        };
        Ok(Side {
            name,
            given,
            stack,
            narrowing,
        })
    }

    /// This side narrowed by `narrowing` (both sides' common sub-prefix).
    fn resolve(&self, narrowing: &str) -> Result<String, SyncError> {
        let name = self.name;
        match &self.stack {
            // Parsed again: the narrowed prefix may pass S3's key limit.
            Some(stack) => {
                let narrowed: S3Location = format!("{stack}{narrowing}").parse().map_err(|e| {
                    SyncError::Config(format!("execution input: the narrowed {name}: {e}"))
                })?;
                Ok(narrowed.to_string())
            }
            None if self.given.is_empty() => Err(SyncError::Config(format!(
                "execution input: no {name} given and the stack has no default"
            ))),
            None => Ok(self.given.to_owned()),
        }
    }
}

/// A stack that fixes encryption (see [`StackConfig::sse`]) keeps it: an
/// input naming `sse` or `sse_kms_key_id` other than the stack's is refused
/// rather than overridden, so nobody believes a run encrypted their way.
fn keep_stack_encryption(
    fields: &serde_json::Map<String, Value>,
    spec: &SyncSpec,
    stack: &StackConfig,
) -> Result<(), SyncError> {
    let Some(stack_sse) = &stack.sse else {
        return Ok(());
    };
    let fixed = match &stack.sse_kms_key_id {
        Some(key) => format!("{stack_sse} with key {key}"),
        None => stack_sse.clone(),
    };
    for (name, given, stack_value) in [
        ("sse", &spec.sse, &stack.sse),
        (
            "sse_kms_key_id",
            &spec.sse_kms_key_id,
            &stack.sse_kms_key_id,
        ),
    ] {
        if fields.contains_key(name) && given != stack_value {
            return Err(SyncError::Config(format!(
                "execution input: {name:?} cannot differ from this stack's encryption ({fixed}; the template's DestinationKmsKeyArn): its roles may encrypt with that key and no other; leave {name:?} out"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stack() -> StackConfig {
        StackConfig::from_vars(|name| {
            match name {
                "S3_FANOUT_SOURCE" => Some("s3://src/data"),
                "S3_FANOUT_DESTINATION" => Some("s3://dst/backup"),
                "S3_FANOUT_REPORT_BUCKET" => Some("reports"),
                "S3_FANOUT_MODE" => Some("size"),
                "S3_FANOUT_EXCLUDE" => Some(r#"["*.tmp", "{a,b}/*"]"#),
                _ => None,
            }
            .map(str::to_owned)
        })
        .unwrap()
    }

    fn refusal(input: Value) -> String {
        match resolve_input(&input, &stack()) {
            Err(SyncError::Config(msg)) => msg,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_input_takes_the_stacks_buckets_and_mode() {
        let (spec, settings, options) = resolve_input(&json!({}), &stack()).unwrap();
        assert_eq!(spec.source, "s3://src/data/");
        assert_eq!(spec.destination, "s3://dst/backup/");
        assert_eq!(options.buckets().unwrap().1.prefix, "backup/");
        assert_eq!(spec.mode, crate::model::options::DiffMode::Size);
        assert_eq!(settings.failure_threshold, 0);
        assert!(settings.validate);
        assert_eq!(spec.exclude, ["*.tmp", "{a,b}/*"]);
        assert!(!options.diff.filter.matches("x/y.tmp"));
    }

    #[test]
    fn an_input_that_names_its_own_filters_replaces_the_stacks() {
        let input = json!({"exclude": [], "include": ["*.jpg"]});
        let (spec, _, options) = resolve_input(&input, &stack()).unwrap();
        assert!(spec.exclude.is_empty());
        assert!(options.diff.filter.matches("x/y.jpg") && !options.diff.filter.matches("y.tmp"));
    }

    #[test]
    fn stack_globs_must_be_a_json_array() {
        let err = StackConfig::from_vars(|name| match name {
            "S3_FANOUT_REPORT_BUCKET" => Some("r".to_owned()),
            "S3_FANOUT_INCLUDE" => Some("*.jpg,*.png".to_owned()),
            _ => None,
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("S3_FANOUT_INCLUDE must be a JSON array"),
            "{err}"
        );
    }

    #[test]
    fn an_input_may_narrow_the_stacks_prefix_and_override_the_mode() {
        let input = json!({"source": "s3://src/data/2024", "destination": "s3://dst/backup/2024", "mode": "etag"});
        let (spec, _, _) = resolve_input(&input, &stack()).unwrap();
        assert_eq!(spec.source, "s3://src/data/2024/");
        assert_eq!(spec.destination, "s3://dst/backup/2024/");
        assert_eq!(spec.mode, crate::model::options::DiffMode::Etag);
    }

    /// The resolved (source, destination) of `input` on [`stack`].
    fn locations(input: Value) -> (String, String) {
        let (spec, _, options) = resolve_input(&input, &stack()).unwrap();
        let (source, destination) = options.buckets().unwrap();
        assert_eq!(spec.source, source.to_string());
        assert_eq!(spec.destination, destination.to_string());
        (spec.source, spec.destination)
    }

    fn both(source: &str, destination: &str) -> (String, String) {
        (source.to_owned(), destination.to_owned())
    }

    #[test]
    fn narrowing_the_source_narrows_the_destination_by_the_same_sub_prefix() {
        let want = both("s3://src/data/2024/", "s3://dst/backup/2024/");
        // With or without the trailing slash: S3Location makes both a folder.
        assert_eq!(locations(json!({"source": "s3://src/data/2024/"})), want);
        assert_eq!(locations(json!({"source": "s3://src/data/2024"})), want);
        assert_eq!(
            locations(json!({"source": "s3://src/data/2024/05", "delete": false})),
            both("s3://src/data/2024/05/", "s3://dst/backup/2024/05/")
        );
        // Naming the stack's own source narrows nothing.
        assert_eq!(
            locations(json!({"source": "s3://src/data"})),
            both("s3://src/data/", "s3://dst/backup/")
        );
    }

    #[test]
    fn narrowing_the_destination_narrows_the_source_by_the_same_sub_prefix() {
        assert_eq!(
            locations(json!({"destination": "s3://dst/backup/2024"})),
            both("s3://src/data/2024/", "s3://dst/backup/2024/")
        );
    }

    #[test]
    fn an_input_naming_both_sides_must_narrow_them_alike() {
        assert_eq!(
            locations(
                json!({"source": "s3://src/data/2024/", "destination": "s3://dst/backup/2024"})
            ),
            both("s3://src/data/2024/", "s3://dst/backup/2024/")
        );
        for (source, destination) in [
            ("s3://src/data/2024/", "s3://dst/backup/2023/"),
            ("s3://src/data/2024/", "s3://dst/backup/"),
            ("s3://src/data/", "s3://dst/backup/2024/"),
            // Different depths.
            ("s3://src/data/2024/05/", "s3://dst/backup/2024/"),
            ("s3://src/data/2024", "s3://dst/backup/2024/05"),
        ] {
            let why = refusal(json!({"source": source, "destination": destination}));
            assert!(
                why.contains("do not line up"),
                "{source} {destination}: {why}"
            );
            assert!(why.contains(source) && why.contains(destination), "{why}");
        }
    }

    #[test]
    fn no_input_widens_a_side_beyond_the_stacks_bucket_and_prefix() {
        for (side, url) in [
            ("source", "s3://src"),
            ("source", "s3://src/"),
            // Same characters, another folder: not inside "data/".
            ("source", "s3://src/database/2024"),
            ("source", "s3://src/dat"),
            ("source", "s3://other/data/2024"),
            ("destination", "s3://dst"),
            ("destination", "s3://dst/backup2/2024"),
            ("destination", "s3://other/backup/2024"),
        ] {
            let why = refusal(json!({side: url}));
            assert!(
                why.contains(&format!("{url} is outside this stack's {side}")),
                "{side} {url}: {why}"
            );
        }
        // Narrowed by the other side, the destination must still fit S3's
        // 1,024-byte key limit.
        let long = StackConfig::from_vars(|name| match name {
            "S3_FANOUT_SOURCE" => Some("s3://src/a".to_owned()),
            "S3_FANOUT_DESTINATION" => Some(format!("s3://dst/{}", "b".repeat(1000))),
            "S3_FANOUT_REPORT_BUCKET" => Some("reports".to_owned()),
            _ => None,
        })
        .unwrap();
        let input = json!({"source": format!("s3://src/a/{}", "c".repeat(40))});
        match resolve_input(&input, &long) {
            Err(SyncError::Config(why)) => {
                assert!(why.contains("narrowed destination"), "{why}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_stack_over_whole_buckets_narrows_from_their_roots() {
        let whole = StackConfig::from_vars(|name| {
            match name {
                "S3_FANOUT_SOURCE" => Some("s3://src"),
                "S3_FANOUT_DESTINATION" => Some("s3://dst/"),
                "S3_FANOUT_REPORT_BUCKET" => Some("reports"),
                _ => None,
            }
            .map(str::to_owned)
        })
        .unwrap();
        let resolve = |input: Value| {
            let (spec, _, _) = resolve_input(&input, &whole).unwrap();
            (spec.source, spec.destination)
        };
        assert_eq!(resolve(json!({})), both("s3://src/", "s3://dst/"));
        assert_eq!(
            resolve(json!({"source": "s3://src/2024"})),
            both("s3://src/2024/", "s3://dst/2024/")
        );
    }

    #[test]
    fn without_stack_defaults_each_side_is_taken_as_given() {
        let bare = StackConfig::from_vars(|name| {
            (name == "S3_FANOUT_REPORT_BUCKET").then(|| "reports".to_owned())
        })
        .unwrap();
        let input = json!({"source": "s3://any/x/2024", "destination": "s3://other/y"});
        let (spec, _, _) = resolve_input(&input, &bare).unwrap();
        assert_eq!(
            (spec.source, spec.destination),
            both("s3://any/x/2024", "s3://other/y")
        );
        match resolve_input(&json!({"source": "s3://any/x"}), &bare) {
            Err(SyncError::Config(why)) => assert!(why.contains("no destination given"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// [`stack`], encrypting every copy with a KMS key of its own.
    fn encrypting_stack(key: Option<&str>) -> StackConfig {
        StackConfig::from_vars(|name| match name {
            "S3_FANOUT_SSE" => Some("aws:kms".to_owned()),
            "S3_FANOUT_SSE_KMS_KEY_ID" => key.map(str::to_owned),
            "S3_FANOUT_REPORT_BUCKET" => Some("reports".to_owned()),
            "S3_FANOUT_SOURCE" => Some("s3://src/data".to_owned()),
            "S3_FANOUT_DESTINATION" => Some("s3://dst/backup".to_owned()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn a_stack_that_fixes_encryption_applies_it_and_refuses_another() {
        let key = "arn:aws:kms:us-east-1:111122223333:key/k1";
        let stack = encrypting_stack(Some(key));
        let (spec, _, options) = resolve_input(&json!({}), &stack).unwrap();
        assert_eq!(spec.sse.as_deref(), Some("aws:kms"));
        assert_eq!(
            options.copy.sse,
            Some(crate::model::options::Sse::Kms {
                key_id: Some(key.to_owned())
            })
        );
        // Restating the stack's own setting is fine.
        let same = json!({"sse": "aws:kms", "sse_kms_key_id": key});
        assert!(resolve_input(&same, &stack).is_ok());
        for (input, field) in [
            (json!({"sse": "AES256"}), "\"sse\""),
            (json!({"sse": null}), "\"sse\""),
            (
                json!({"sse_kms_key_id": "arn:aws:kms:us-east-1:111122223333:key/k2"}),
                "\"sse_kms_key_id\"",
            ),
            (
                json!({"sse": "aws:kms", "sse_kms_key_id": null}),
                "\"sse_kms_key_id\"",
            ),
        ] {
            match resolve_input(&input, &stack) {
                Err(SyncError::Config(why)) => {
                    assert!(
                        why.contains(&format!("{field} cannot differ")),
                        "{input}: {why}"
                    );
                    assert!(why.contains(key), "{why}");
                }
                other => panic!("{input}: expected a refusal, got {other:?}"),
            }
        }
        // aws:kms with the bucket's default key: naming a key changes it.
        let default_key = encrypting_stack(None);
        let input = json!({"sse_kms_key_id": key});
        assert!(matches!(
            resolve_input(&input, &default_key),
            Err(SyncError::Config(_))
        ));
    }

    #[test]
    fn a_stack_without_encryption_leaves_it_to_the_input() {
        let (spec, _, options) = resolve_input(&json!({"sse": "AES256"}), &stack()).unwrap();
        assert_eq!(spec.sse.as_deref(), Some("AES256"));
        assert_eq!(options.copy.sse, Some(crate::model::options::Sse::S3));
        let (spec, _, _) = resolve_input(&json!({}), &stack()).unwrap();
        assert_eq!(spec.sse, None);
    }

    #[test]
    fn invalid_inputs_are_refused_with_the_field_named() {
        assert!(refusal(json!({"delet": true})).contains("unknown field \"delet\""));
        // Delete markers are appended with DeleteObject.
        assert!(refusal(json!({"all_versions": true})).contains("appends delete markers"));
        // A time is taken (and checked) like the CLI's --as-of.
        assert!(
            refusal(json!({"as_of": "last tuesday"}))
                .contains("--as-of \"last tuesday\" is not a date")
        );
        assert!(
            refusal(json!({"source": "s3://other/data"})).contains("outside this stack's source")
        );
        assert!(refusal(json!({"delete": true})).contains("AllowDelete=false"));
        assert!(refusal(json!({"report": "s3://x/"})).contains("report bucket"));
        assert!(refusal(json!({"mode": "fast"})).contains("invalid options"));
        assert!(refusal(json!([1])).contains("JSON object"));
        assert!(refusal(json!({"shard_concurrency": 0})).contains("at least 1"));
        assert!(refusal(json!({"multipart_threshold": "1KiB"})).contains("between 5MiB and 5GiB"));
        // Directories are the CLI's: a Lambda has no disk to sync.
        assert!(refusal(json!({"destination": "/tmp/restore"})).contains("s3://"));
    }
}
