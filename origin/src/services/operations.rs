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
        let ready = self.readiness().await;
        for (dependency, up) in [("redis", ready.redis), ("database", ready.database)] {
            self.metrics
                .ready
                .with_label_values(&[dependency])
                .set(i64::from(up));
        }
        let gauges = &self.metrics.queue_gauges;
        gauges.reset();
        self.metrics.stock_left.reset();
        self.metrics.sold_out_listed.reset();
        if let Ok(products) = self.stock.live_products().await {
            let stock = self.stock.stock_of(&products).await.unwrap_or_default();
            let listed = self.sold_out.snapshot().await.map(|s| s.sold_out).ok();
            let now_ms = crate::clock::unix_ms();
            for (product, left) in products.iter().zip(&stock) {
                let id = product.to_string();
                if let Some(left) = left {
                    self.metrics.stock_left.with_label_values(&[&id]).set(*left);
                }
                if let Some(listed) = &listed {
                    self.metrics
                        .sold_out_listed
                        .with_label_values(&[&id])
                        .set(i64::from(listed.contains(product)));
                }
            }
            for (index, product) in products.into_iter().enumerate() {
                let Ok(stats) = self.streams.stats(product).await else {
                    continue;
                };
                let id = product.to_string();
                if let Some(Some(left)) = stock.get(index) {
                    self.metrics.history.record_levels(
                        product,
                        now_ms,
                        *left,
                        stats.lag + stats.pending,
                    );
                }
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
