//! Every origin follows the change stream to drop its in-memory copy of an
//! item the moment it changes (the shared Redis side is the leader's job).

use std::sync::Arc;
use std::time::Duration;

use crate::services::catalog::Catalog;
use crate::shutdown::Shutdown;
use crate::store::redis::product_changes::ChangeStream;
use crate::telemetry::chain;

/// How long one read waits for news: bounds how long shutdown waits.
const READ_BLOCK: Duration = Duration::from_millis(500);

pub async fn run(changes: ChangeStream, catalog: Arc<Catalog>, shutdown: Shutdown) {
    let mut tail = match changes.tail() {
        Ok(tail) => tail,
        Err(err) => {
            tracing::error!(error = %chain(&err), "change tail cannot start");
            return;
        }
    };
    while !shutdown.is_triggered() {
        match tail.next(READ_BLOCK).await {
            Ok(records) => {
                for record in records {
                    catalog.invalidate(record.product);
                }
            }
            Err(err) => {
                tracing::warn!(error = %chain(&err), "following the change stream failed; retrying");
                if !shutdown.sleep(Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
}
