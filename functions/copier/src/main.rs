//! The copier Lambda: copies the tasks of SQS batches server-side and records one result per batch.
//!
//! Only wiring lives here: tracing, clients built once per container, and the
//! runtime loop. The handler is `s3_fanout::serverless::copier::handle`, the
//! code the tests and the local stack run.

use lambda_runtime::{Error, run, service_fn};
use s3_fanout::serverless::{FunctionEnv, copier, init_tracing};

fn main() -> Result<(), Error> {
    // Not #[tokio::main]: the allocator is tuned before the runtime's
    // threads exist (see s3_fanout::base::allocator).
    s3_fanout::base::allocator::tuned_runtime()?.block_on(async {
        init_tracing();
        let env = FunctionEnv::from_environment().await?;
        run(service_fn(|event| copier::handle(event, &env))).await
    })
}
