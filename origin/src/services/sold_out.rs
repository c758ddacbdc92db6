//! Sold-out flags on every node, kept in step through Redis.
//!
//! A node answers `409 sold_out` from its own memory once it knows a
//! product is sold out: the check that costs no Redis round trip. It learns
//! that from its reserve answers and from the registry's broadcast (the
//! pub/sub channel every node follows); a return to stock clears the flag
//! everywhere the same way. Pub/sub has no acknowledgements: a node that is
//! disconnected misses messages, so every (re)subscription starts with a
//! full resynchronisation from the registry, checked against real stock;
//! and flags expire by themselves (`SECKILL_SOLDOUT_TTL_MS`), so none
//! sticks forever.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use seckill_shared::api::SoldOutSnapshot;
use seckill_shared::ProductId;

use super::catalog::Catalog;
use super::preheat::Preheater;
use super::product_flags::ProductFlags;
use crate::backoff::Backoff;
use crate::shutdown::Shutdown;
use crate::store::redis::sold_out::{SoldOutEvent, SoldOutRegistry};
use crate::store::redis::stock::Stock;
use crate::store::StoreResult;
use crate::telemetry::chain;

pub struct SoldOut {
    flags: ProductFlags,
    registry: SoldOutRegistry,
    stock: Stock,
}

impl SoldOut {
    pub fn new(flag_ttl: Duration, registry: SoldOutRegistry, stock: Stock) -> Self {
        Self {
            flags: ProductFlags::new(flag_ttl.as_millis() as u64),
            registry,
            stock,
        }
    }

    /// Whether this node answers buys of `product` as sold out from memory.
    pub fn is_flagged(&self, product: ProductId) -> bool {
        self.flags.is_raised(product)
    }

    /// Products this node holds a flag for now.
    pub fn flagged(&self) -> Vec<ProductId> {
        self.flags.raised()
    }

    pub fn purge_expired(&self) {
        self.flags.purge_expired();
    }

    /// This node saw the stock reach zero: raise its flag and, the first
    /// time, record it in the registry (which tells the other nodes). The
    /// registry write is off the request path: the reserve script stays the
    /// authority.
    pub fn note(&self, product: ProductId) {
        if self.flags.raise(product) {
            let registry = self.registry.clone();
            tokio::spawn(async move {
                if let Err(err) = registry.mark(product, true).await {
                    tracing::warn!(product = product.get(), error = %chain(&err), "could not record sell-out in redis");
                }
            });
        }
    }

    /// Records whether the product is sold out now, and tells every node.
    pub async fn mark(&self, product: ProductId, sold_out: bool) -> StoreResult<()> {
        self.registry.mark(product, sold_out).await?;
        Ok(())
    }

    /// The registry as edges read it (`GET /api/soldout`).
    pub async fn snapshot(&self) -> StoreResult<SoldOutSnapshot> {
        Ok(self.registry.snapshot().await?)
    }

    /// The products a node should hold flags for: those in the registry
    /// whose stock really is zero. Entries whose stock came back (a lost
    /// "back in stock" call) are repaired on the way.
    pub async fn verified(&self) -> StoreResult<Vec<ProductId>> {
        let snapshot = self.registry.snapshot().await?;
        let stocks = self.stock.stock_of(&snapshot.sold_out).await?;
        let mut sold_out = Vec::new();
        for (product, stock) in snapshot.sold_out.into_iter().zip(stocks) {
            match stock {
                Some(stock) if stock > 0 => {
                    tracing::warn!(
                        product = product.get(),
                        stock,
                        "listed as sold out with stock left: unlisted"
                    );
                    self.registry.mark(product, false).await?;
                }
                _ => sold_out.push(product),
            }
        }
        Ok(sold_out)
    }

    /// Every `interval`, checks what is held sold out against real stock:
    /// registry entries whose stock came back (a sell-out recorded late,
    /// after a release; a crash between a release and its broadcast) are
    /// removed and broadcast, and this node's own flags for items with
    /// stock are dropped. So nothing is answered as sold out, by an origin
    /// or from `/api/soldout`, for much longer than `interval` while it has
    /// stock.
    pub async fn verify_periodically(self: Arc<Self>, interval: Duration, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while shutdown.tick(&mut tick).await {
            if let Err(err) = self.verify_once().await {
                tracing::debug!(error = %chain(&err), "checking sold-out flags against stock failed");
            }
        }
    }

    async fn verify_once(&self) -> StoreResult<()> {
        self.verified().await?;
        let flagged = self.flags.raised();
        let stocks = self.stock.stock_of(&flagged).await?;
        for (product, stock) in flagged.into_iter().zip(stocks) {
            if stock.is_some_and(|stock| stock > 0) {
                self.flags.clear(product);
            }
        }
        Ok(())
    }

    /// Follows the broadcast until shutdown, resubscribing (and
    /// resynchronising) whenever the subscription is lost. A subscription
    /// lost means Redis may have restarted, perhaps without its data: every
    /// resubscription also makes the database's items live again (a no-op
    /// for those Redis still holds).
    pub async fn follow(
        self: Arc<Self>,
        catalog: Arc<Catalog>,
        preheater: Preheater,
        shutdown: Shutdown,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut first = true;
        while !shutdown.is_triggered() {
            let reload = (!first).then_some(&preheater);
            first = false;
            let err = match self
                .follow_once(&catalog, reload, &shutdown, &mut backoff)
                .await
            {
                Ok(()) => return, // shutdown
                Err(err) => err,
            };
            let delay = backoff.next_delay();
            tracing::warn!(error = %chain(&err), retry_in_ms = delay.as_millis() as u64,
                "sold-out subscription lost; will resubscribe and resynchronise");
            if !shutdown.sleep(delay).await {
                return;
            }
        }
    }

    async fn follow_once(
        &self,
        catalog: &Catalog,
        reload: Option<&Preheater>,
        shutdown: &Shutdown,
        backoff: &mut Backoff,
    ) -> StoreResult<()> {
        let messages = self.registry.subscribe().await?;
        if let Some(preheater) = reload {
            preheater.load_all().await?;
        }
        // Subscribed first, then read the registry: nothing can fall between.
        let asked_ms = self.flags.now_ms();
        let sold_out = self.verified().await?;
        tracing::info!(
            flags = sold_out.len(),
            "sold-out flags resynchronised from redis"
        );
        self.flags.replace_all(sold_out, asked_ms);
        backoff.reset();
        let mut messages = std::pin::pin!(messages);
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return Ok(()),
                message = messages.next() => match message {
                    None => {
                        return Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connection closed")).into());
                    }
                    Some(Some(SoldOutEvent::SoldOut(product))) => {
                        self.flags.raise(product);
                    }
                    Some(Some(SoldOutEvent::BackInStock(product))) => {
                        self.flags.clear(product);
                        catalog.invalidate(product);
                    }
                    Some(None) => {}
                }
            }
        }
    }
}
