//! Which deployed stack a serverless command drives (`run`, `status`,
//! `cancel`, `report`), and how their errors become exit codes.

use std::path::PathBuf;

use crate::base::client::ClientSettings;
use crate::base::error::SyncError;
use crate::model::options::ClientFlags;
use crate::serverless::control::StackOutputs;

use crate::cli::output::EXIT_USAGE;

/// Which deployed stack to drive.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// CloudFormation stack name; its outputs name the state machine and
    /// the report bucket.
    #[arg(long, env = "S3_FANOUT_STACK")]
    pub stack: Option<String>,
    /// A JSON file of the stack's outputs (from `aws cloudformation
    /// describe-stacks`, or written by `s3-fanout local-stack`).
    #[arg(long, value_name = "FILE", env = "S3_FANOUT_STACK_OUTPUTS")]
    pub stack_outputs: Option<PathBuf>,
    /// Instead of a stack: the state machine...
    #[arg(long, value_name = "ARN", env = "S3_FANOUT_STATE_MACHINE_ARN")]
    pub state_machine_arn: Option<String>,
    /// ...and the report bucket.
    #[arg(long, value_name = "BUCKET", env = "S3_FANOUT_REPORT_BUCKET")]
    pub report_bucket: Option<String>,
    #[arg(long, value_name = "PREFIX", default_value = "runs/")]
    pub report_prefix: String,
    /// ...and the run counters' table (the stack's RunTableName output),
    /// for a run's progress.
    #[arg(long, value_name = "TABLE", env = "S3_FANOUT_RUN_TABLE")]
    pub run_table: Option<String>,
    #[arg(long, env = "S3_FANOUT_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "S3_FANOUT_PROFILE")]
    pub profile: Option<String>,
    /// Endpoint for Step Functions, S3 and SQS (local stacks).
    #[arg(long, value_name = "URL", env = "S3_FANOUT_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

impl StackArgs {
    fn settings(&self) -> ClientSettings {
        ClientFlags {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            ..ClientFlags::default()
        }
        .settings(None, None)
    }

    pub(super) async fn resolve(&self) -> Result<(StackOutputs, ClientSettings), SyncError> {
        let settings = self.settings();
        let outputs = match (&self.stack_outputs, &self.stack, &self.state_machine_arn) {
            (Some(path), _, _) => StackOutputs::from_file(path)?,
            (None, Some(name), _) => StackOutputs::from_stack(name, &settings).await?,
            (None, None, Some(arn)) => StackOutputs {
                state_machine_arn: arn.clone(),
                report_bucket_name: self.report_bucket.clone().ok_or_else(|| {
                    SyncError::Config("--state-machine-arn needs --report-bucket".into())
                })?,
                report_prefix: self.report_prefix.clone(),
                work_queue_url: None,
                dead_letter_queue_url: None,
                range_queue_url: None,
                range_dead_letter_queue_url: None,
                run_table_name: self.run_table.clone(),
                event_queue_url: None,
                event_dead_letter_queue_url: None,
                endpoint_url: None,
            },
            (None, None, None) => {
                return Err(SyncError::Config(
                    "which stack? pass --stack NAME, --stack-outputs FILE, or --state-machine-arn with --report-bucket".into(),
                ));
            }
        };
        Ok((outputs, settings))
    }
}

pub(crate) fn config_exit(err: &SyncError) -> i32 {
    eprintln!("error: {err}");
    if matches!(err, SyncError::Config(_)) {
        EXIT_USAGE
    } else {
        1
    }
}
