//! Ctrl-C: the first stops a run cleanly, the second at once.

use tokio_util::sync::CancellationToken;

pub async fn cancel_on_ctrl_c(cancel: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!(
        "\ninterrupted: finishing copies in flight and aborting open multipart uploads (Ctrl-C again to quit at once)"
    );
    cancel.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(130);
    }
}
