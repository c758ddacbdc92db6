//! Every origin follows the change stream to drop its in-memory copy of an
//! item the moment it changes (the shared Redis side is the leader's job).

use std::time::Duration;

use redis::streams::StreamReadReply;

use super::ChangeEvent;
use crate::state::AppState;

pub async fn run(state: AppState) {
    let mut conn = match state.inventory.dedicated_connection() {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(error = %err, "change tail cannot start");
            return;
        }
    };
    let stream = state.inventory.keys().product_changes();
    // From now on: older changes are already in what this process reads.
    let mut last = "$".to_string();
    while !state.shutdown.is_cancelled() {
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query_async(&mut conn)
            .await;
        match read {
            Ok(reply) => {
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    if let Some(event) = ChangeEvent::parse(&entry.map) {
                        state.catalog.invalidate(event.product);
                    }
                    last = entry.id;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "following the change stream failed; retrying");
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
