//! Graceful shutdown, shared by every task of the process.
//!
//! One `CancellationToken` is cancelled on SIGTERM or Ctrl-C. The HTTP server
//! stops accepting and drains in-flight requests; background loops (order
//! consumers, pollers, subscribers) check the token between units of work so
//! they finish and acknowledge what they hold instead of dropping it.

use tokio_util::sync::CancellationToken;

/// Cancels `token` when the process is asked to stop.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, finishing work in hand");
        token.cancel();
    });
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
