//! The reporter Lambda: counts batch results, and aggregates them into the run's report.
//!
//! Only wiring lives here: tracing, clients built once per container, and the
//! runtime loop. The handler is `s3_fanout::serverless::reporter::handle`, the
//! code the tests and the local stack run.

use lambda_runtime::{Error, run, service_fn};
use s3_fanout::serverless::{FunctionEnv, init_tracing, reporter};

#[tokio::main]
async fn main() -> Result<(), Error> {
    s3_fanout::allocator::tune();
    init_tracing();
    let env = FunctionEnv::from_environment().await?;
    run(service_fn(|event| reporter::handle(event, &env))).await
}
