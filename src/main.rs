//! The `s3-fanout` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    // First: the allocator is tuned while this is the only thread, then the
    // runtime's threads start, so every one of them allocates with the same
    // settings.
    let runtime = match s3_fanout::base::allocator::tuned_runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let cli = s3_fanout::cli::Cli::parse();
    let code = runtime.block_on(s3_fanout::cli::run(cli));
    std::process::exit(code);
}
