//! The replicator Lambda: S3 event notifications in (native or EventBridge,
//! through SQS), each key's current state reconciled at the destination.
//!
//! Only wiring lives here: tracing, clients built once per container, and the
//! runtime loop. The handler is `s3_fanout::serverless::replicator::handle`,
//! the code the tests and the local stack run.

use lambda_runtime::{Error, run, service_fn};
use s3_fanout::serverless::replicator::{self, Replicator};
use s3_fanout::serverless::{FunctionEnv, init_tracing};

fn main() -> Result<(), Error> {
    // Not #[tokio::main]: the allocator is tuned before the runtime's
    // threads exist (see s3_fanout::base::allocator).
    s3_fanout::base::allocator::tuned_runtime()?.block_on(async {
        init_tracing();
        let env = FunctionEnv::from_environment().await?;
        let replicator = Replicator::new(&env).await?;
        run(service_fn(|event| replicator::handle(event, &replicator))).await
    })
}
