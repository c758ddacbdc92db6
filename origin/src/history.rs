//! The last minutes of each item, kept by this origin for the operations
//! page's charts: buys per second by outcome (counted on the buy path, one
//! atomic add in a per-second ring), and stock left and queue depth each
//! time they are read anyway (the page's list, a metrics scrape), so no
//! task of its own polls Redis. Served at `GET /admin/history`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use seckill_shared::api::{BuySecond, ItemHistory, LevelSample};
use seckill_shared::{ErrorCode, ProductId};

/// Seconds of buys kept per item.
pub const WINDOW_S: u64 = 300;
/// Level samples kept per item (one a second when the page watches).
const MAX_LEVELS: usize = 600;

/// What a buy came to, as the charts group it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Queued,
    SoldOut,
    AlreadyOrdered,
    RateLimited,
    Other,
}

impl Outcome {
    pub fn of_refusal(code: ErrorCode) -> Self {
        match code {
            ErrorCode::SoldOut => Self::SoldOut,
            ErrorCode::AlreadyOrdered => Self::AlreadyOrdered,
            ErrorCode::RateLimited => Self::RateLimited,
            _ => Self::Other,
        }
    }
}

#[derive(Default)]
struct Second {
    /// The unix second these counts belong to.
    at: AtomicU64,
    counts: [AtomicU64; 5],
}

struct Item {
    seconds: Box<[Second]>,
    levels: Mutex<VecDeque<LevelSample>>,
}

impl Item {
    fn new() -> Self {
        Self {
            seconds: (0..WINDOW_S).map(|_| Second::default()).collect(),
            levels: Mutex::new(VecDeque::new()),
        }
    }
}

#[derive(Default)]
pub struct History {
    items: RwLock<HashMap<ProductId, Arc<Item>>>,
}

impl History {
    fn item(&self, product: ProductId) -> Arc<Item> {
        if let Some(item) = self.items.read().expect("history lock").get(&product) {
            return item.clone();
        }
        self.items
            .write()
            .expect("history lock")
            .entry(product)
            .or_insert_with(|| Arc::new(Item::new()))
            .clone()
    }

    /// Counts one buy answered at `now_s` (unix seconds).
    pub fn count_buy(&self, product: ProductId, outcome: Outcome, now_s: u64) {
        let item = self.item(product);
        let second = &item.seconds[(now_s % WINDOW_S) as usize];
        // The first buy of a new second takes the slot over and clears the
        // counts it held from WINDOW_S ago (a buy racing it may be lost:
        // these figures draw charts, they are not the books).
        if second.at.load(Ordering::Relaxed) != now_s
            && second.at.swap(now_s, Ordering::AcqRel) != now_s
        {
            for count in &second.counts {
                count.store(0, Ordering::Relaxed);
            }
        }
        second.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records an item's stock left and queue depth read at `now_ms`.
    pub fn record_levels(&self, product: ProductId, now_ms: u64, stock_left: i64, queue: u64) {
        let item = self.item(product);
        let mut levels = item.levels.lock().expect("history lock");
        // Several readers in the same 200 ms add nothing to a chart.
        if levels.back().is_some_and(|last| now_ms < last.t_ms + 200) {
            return;
        }
        levels.push_back(LevelSample {
            t_ms: now_ms,
            stock_left,
            queue,
        });
        let oldest = now_ms.saturating_sub(WINDOW_S * 1_000);
        while levels.len() > MAX_LEVELS || levels.front().is_some_and(|l| l.t_ms < oldest) {
            levels.pop_front();
        }
    }

    /// The items with a history, newest (highest id) first, at most `limit`.
    pub fn items(&self, limit: usize) -> Vec<ProductId> {
        let mut products: Vec<ProductId> = self
            .items
            .read()
            .expect("history lock")
            .keys()
            .copied()
            .collect();
        products.sort_unstable_by(|a, b| b.cmp(a));
        products.truncate(limit);
        products
    }

    /// The last `WINDOW_S` seconds up to `now_ms` of each of `products`.
    pub fn view(&self, products: &[ProductId], now_ms: u64) -> Vec<ItemHistory> {
        let now_s = now_ms / 1_000;
        products
            .iter()
            .map(|&product| {
                let item = self.item(product);
                let buys = ((now_s + 1).saturating_sub(WINDOW_S)..=now_s)
                    .map(|t| {
                        let second = &item.seconds[(t % WINDOW_S) as usize];
                        let mut out = BuySecond {
                            t,
                            ..Default::default()
                        };
                        if second.at.load(Ordering::Acquire) == t {
                            let [queued, sold_out, already_ordered, rate_limited, other] =
                                &second.counts;
                            out.queued = queued.load(Ordering::Relaxed);
                            out.sold_out = sold_out.load(Ordering::Relaxed);
                            out.already_ordered = already_ordered.load(Ordering::Relaxed);
                            out.rate_limited = rate_limited.load(Ordering::Relaxed);
                            out.other = other.load(Ordering::Relaxed);
                        }
                        out
                    })
                    .collect();
                let oldest = now_ms.saturating_sub(WINDOW_S * 1_000);
                let levels = item
                    .levels
                    .lock()
                    .expect("history lock")
                    .iter()
                    .filter(|l| l.t_ms >= oldest)
                    .copied()
                    .collect();
                ItemHistory {
                    product_id: product,
                    buys,
                    levels,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: i64) -> ProductId {
        ProductId::new(id).unwrap()
    }

    #[test]
    fn buys_are_counted_per_second_and_forgotten_after_the_window() {
        let history = History::default();
        let t = 1_000_000;
        for _ in 0..3 {
            history.count_buy(p(1), Outcome::Queued, t);
        }
        history.count_buy(p(1), Outcome::SoldOut, t + 1);
        history.count_buy(p(2), Outcome::RateLimited, t + 1);
        let view = history.view(&[p(1), p(2)], (t + 1) * 1_000 + 500);
        let buys = &view[0].buys;
        assert_eq!(buys.len(), WINDOW_S as usize);
        assert_eq!(buys.last().unwrap().t, t + 1);
        assert_eq!(buys[buys.len() - 2].queued, 3);
        assert_eq!(buys.last().unwrap().sold_out, 1);
        assert_eq!(view[1].buys.last().unwrap().rate_limited, 1);
        // The same slot a window later starts from zero.
        history.count_buy(p(1), Outcome::Other, t + WINDOW_S);
        let later = history.view(&[p(1)], (t + WINDOW_S) * 1_000);
        let last = later[0].buys.last().unwrap();
        assert_eq!((last.queued, last.other), (0, 1));
        assert!(later[0].buys.iter().all(|b| b.t > t));
    }

    #[test]
    fn levels_are_thinned_and_aged_out() {
        let history = History::default();
        history.record_levels(p(1), 10_000, 100, 0);
        history.record_levels(p(1), 10_100, 99, 1);
        history.record_levels(p(1), 11_000, 90, 10);
        let view = history.view(&[p(1)], 11_000);
        let stock: Vec<i64> = view[0].levels.iter().map(|l| l.stock_left).collect();
        assert_eq!(stock, vec![100, 90]);
        let aged = history.view(&[p(1)], 11_001 + WINDOW_S * 1_000);
        assert_eq!(aged[0].levels.len(), 0);
    }
}
