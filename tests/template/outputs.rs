//! The check on the stack outputs operators and the CLI need. That the
//! replication outputs carry its condition is
//! `conditions::check_references_resolve`'s to say.

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
        // `status` reads a run's progress in the run counters.
        "RunTableName",
        "PlannerFunctionName",
        "ListerFunctionName",
        "CopierFunctionName",
        "ReporterFunctionName",
        "NightlyScheduleName",
        "SyncSchedule",
        // Replication=true: where native S3 notifications go, and what to
        // watch and redrive.
        "EventQueueArn",
        "EventQueueUrl",
        "EventDeadLetterQueueUrl",
        "ReplicatorFunctionName",
        // Where to look: the dashboards, and the topic to subscribe to
        // (RunNotifications=true).
        "RunDashboardName",
        "ReplicationDashboardName",
        "RunTopicArn",
    ] {
        ensure!(outputs.contains_key(name), "output {name} is missing");
    }
    Ok(())
}
