//! The execution input of the state machine, validated once by the planner
//! into a [`RunManifest`] that every later step reads.
//!
//! The input is a [`SyncSpec`] in JSON (the CLI's options, snake_case) plus a
//! few run-level fields. Unknown fields are refused, not ignored: a typo in
//! `"delet": true` must not become a nightly run without deletions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{SyncOptions, SyncSpec};
use crate::error::SyncError;
use crate::location::{KeyRange, S3Location};
use crate::serverless::env::StackConfig;

/// Run-level fields of the execution input, besides the sync options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// Failed objects a run may have and still succeed.
    pub failure_threshold: u64,
    /// Shards listed at once (the Map state's MaxConcurrency).
    pub shard_concurrency: u32,
    /// At most this many shards (the Map's items travel in the execution's
    /// state, which is limited to 256 KiB).
    pub max_shards: u32,
    /// Run the VALIDATE phase (re-list and re-diff every shard).
    pub validate: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            failure_threshold: 0,
            shard_concurrency: 16,
            max_shards: 256,
            validate: true,
        }
    }
}

/// Fields of [`SyncSpec`] the serverless runtime takes from the stack, not
/// from an execution, with the reason given to whoever sets them.
const STACK_OWNED: &[(&str, &str)] = &[
    ("report", "reports go to the stack's report bucket"),
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

/// What the planner writes to `run.json`: everything later steps need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunManifest {
    pub version: u32,
    pub run_id: String,
    /// The resolved options: stack defaults filled in, endpoints the stack's.
    pub spec: SyncSpec,
    pub settings: RunSettings,
    pub shards: Vec<KeyRange>,
    pub created_at: String,
}

impl RunManifest {
    pub const KEY: &'static str = "run.json";
    pub const VERSION: u32 = 1;
}

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

    spec.source = within_stack(&spec.source, stack.source.as_deref(), "source")?;
    spec.destination = within_stack(
        &spec.destination,
        stack.destination.as_deref(),
        "destination",
    )?;
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
    stack.apply_client(&mut spec);
    let options = SyncOptions::try_from(spec.clone())?;
    options
        .buckets()
        .map_err(|e| SyncError::Config(format!("execution input: {e}")))?;
    Ok((spec, settings, options))
}

/// An execution may narrow the stack's location (a sub-prefix), never leave
/// it: the functions' IAM policies name the stack's buckets and prefixes.
fn within_stack(given: &str, stack: Option<&str>, side: &str) -> Result<String, SyncError> {
    match (given.is_empty(), stack) {
        (true, Some(stack)) => Ok(stack.to_owned()),
        (true, None) => Err(SyncError::Config(format!(
            "execution input: no {side} given and the stack has no default"
        ))),
        (false, None) => Ok(given.to_owned()),
        (false, Some(stack)) => {
            let (given_loc, stack_loc): (S3Location, S3Location) = (given.parse()?, stack.parse()?);
            if given_loc.bucket == stack_loc.bucket
                && given_loc.prefix.starts_with(&stack_loc.prefix)
            {
                Ok(given.to_owned())
            } else {
                Err(SyncError::Config(format!(
                    "execution input: {side} {given} is outside this stack's {side} {stack}; its functions may only touch that"
                )))
            }
        }
    }
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
        assert_eq!(spec.source, "s3://src/data");
        assert_eq!(options.buckets().unwrap().1.prefix, "backup/");
        assert_eq!(spec.mode, crate::diff::DiffMode::Size);
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
        assert_eq!(spec.source, "s3://src/data/2024");
        assert_eq!(spec.mode, crate::diff::DiffMode::Etag);
    }

    #[test]
    fn invalid_inputs_are_refused_with_the_field_named() {
        assert!(refusal(json!({"delet": true})).contains("unknown field \"delet\""));
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
