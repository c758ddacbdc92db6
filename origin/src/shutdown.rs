//! Graceful shutdown, shared by every task of the process.
//!
//! One [`Shutdown`] is triggered on SIGTERM or Ctrl-C. The HTTP server
//! stops accepting and drains requests in flight; background loops (order
//! consumers, pollers, subscribers) wait through [`Shutdown::sleep`] and
//! check [`Shutdown::is_triggered`] between units of work, so they finish
//! and acknowledge what they hold instead of dropping it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown is triggered.
    pub async fn triggered(&self) {
        self.0.cancelled().await
    }

    /// An owned future resolving at shutdown (for `axum::serve`).
    pub fn triggered_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.0.clone().cancelled_owned()
    }

    /// Sleeps for `delay` unless shutdown comes first; false when shutting
    /// down.
    pub async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.0.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Waits for the interval's next tick unless shutdown comes first;
    /// false when shutting down.
    pub async fn tick(&self, interval: &mut tokio::time::Interval) -> bool {
        tokio::select! {
            _ = self.0.cancelled() => false,
            _ = interval.tick() => true,
        }
    }

    /// Triggers this shutdown on SIGTERM or Ctrl-C.
    pub fn on_signal(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested, finishing work in hand");
            shutdown.trigger();
        });
    }
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
