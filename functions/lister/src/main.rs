//! The lister Lambda: lists one shard of both sides, diffs it and sends copy batches to SQS (also runs VALIDATE).
//!
//! Only wiring lives here: tracing, clients built once per container, and the
//! runtime loop. The handler is `s3_fanout::serverless::lister::handle`, the
//! code the tests and the local stack run.

use lambda_runtime::{Error, run, service_fn};
use s3_fanout::serverless::{FunctionEnv, init_tracing, lister};

#[tokio::main]
async fn main() -> Result<(), Error> {
    s3_fanout::allocator::tune();
    init_tracing();
    let env = FunctionEnv::from_environment().await?;
    run(service_fn(|event| lister::handle(event, &env))).await
}
