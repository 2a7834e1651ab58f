//! The `s3-fanout` binary: parse the command line and hand over to the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = s3_fanout::cli::Cli::parse();
    let code = s3_fanout::cli::run(cli).await;
    std::process::exit(code);
}
