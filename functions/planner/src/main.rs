//! The planner Lambda: splits the source range into key-range shards.
//!
//! Only wiring lives here: tracing, clients built once per container, and the
//! runtime loop. The handler is `s3_fanout::serverless::planner::handle`, the
//! code the tests and the local stack run.

use lambda_runtime::{Error, run, service_fn};
use s3_fanout::serverless::{FunctionEnv, init_tracing, planner};

fn main() -> Result<(), Error> {
    // Not #[tokio::main]: the allocator is tuned before the runtime's
    // threads exist (see s3_fanout::base::allocator).
    s3_fanout::base::allocator::tuned_runtime()?.block_on(async {
        init_tracing();
        let env = FunctionEnv::from_environment().await?;
        run(service_fn(|event| planner::handle(event, &env))).await
    })
}
