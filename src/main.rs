//! The `s3-fanout` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    // Before the runtime's threads exist, so every one of them allocates
    // with the same settings.
    s3_fanout::allocator::tune();
    let cli = s3_fanout::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(s3_fanout::cli::run(cli));
    std::process::exit(code);
}
