//! The check on the stack outputs operators and the CLI need.

use crate::Check;
use crate::model::Template;

/// The outputs the CLI and operators look a deployed stack up by.
pub fn check_outputs(t: &Template) -> Check {
    let outputs = t.section("Outputs");
    for name in [
        "StateMachineArn",
        "WorkQueueUrl",
        "DeadLetterQueueUrl",
        "ReportBucketName",
        "ReportPrefix",
        "PlannerFunctionName",
        "ListerFunctionName",
        "CopierFunctionName",
        "ReporterFunctionName",
    ] {
        ensure!(outputs.contains_key(name), "output {name} is missing");
    }
    Ok(())
}
