//! What orchestrators and Prometheus ask about: is this node ready, and the
//! gauges read from Redis when metrics are scraped (not on every request).

use std::sync::Arc;
use std::time::Duration;

use super::sold_out::SoldOut;
use crate::metrics::Metrics;
use crate::store::db::Database;
use crate::store::redis::order_streams::OrderStreams;
use crate::store::redis::stock::Stock;
use crate::store::redis::{Redis, RedisHealth};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Which stores answer, and what a cluster says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub redis: bool,
    pub database: bool,
    /// `None` on one Redis, or when the cluster did not answer at all.
    pub cluster: Option<RedisHealth>,
}

pub struct Operations {
    pub redis: Redis,
    pub db: Database,
    pub stock: Stock,
    pub streams: OrderStreams,
    pub sold_out: Arc<SoldOut>,
    pub metrics: Arc<Metrics>,
}

impl Operations {
    /// Redis and the database both answer within two seconds (on a
    /// cluster: its state is `ok` and every primary answers): this node
    /// can take buys.
    pub async fn readiness(&self) -> Readiness {
        let (redis, db) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.redis.health()),
            tokio::time::timeout(CHECK_TIMEOUT, self.db.ping()),
        );
        let health = match redis {
            Ok(Ok(health)) => Some(health),
            _ => None,
        };
        Readiness {
            redis: health.as_ref().is_some_and(RedisHealth::is_ok),
            database: matches!(db, Ok(Ok(()))),
            cluster: health.filter(|h| matches!(h, RedisHealth::Cluster { .. })),
        }
    }

    /// Prometheus text with the scrape-time gauges filled in. If Redis is
    /// down the scrape still succeeds, without the queue figures.
    pub async fn metrics_text(&self) -> String {
        self.metrics
            .sold_out_flags
            .set(self.sold_out.flagged().len() as i64);
        let gauges = &self.metrics.queue_gauges;
        gauges.reset();
        if let Ok(products) = self.stock.live_products().await {
            for product in products {
                let Ok(stats) = self.streams.stats(product).await else {
                    continue;
                };
                let id = product.to_string();
                for (measure, value) in [
                    ("length", stats.length),
                    ("pending", stats.pending),
                    ("lag", stats.lag),
                    ("dead_letters", stats.dead_letters),
                ] {
                    gauges
                        .with_label_values(&[id.as_str(), measure])
                        .set(value as i64);
                }
            }
        }
        self.metrics.render()
    }
}
