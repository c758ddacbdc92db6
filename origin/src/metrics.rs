//! Prometheus metrics, exposed at `GET /metrics`: one registry per process,
//! handed to whatever counts something.
//!
//! Counters are updated on the request path (an atomic add each); gauges that
//! describe Redis state (queue length, pending entries) are read when the
//! metrics are scraped, not on every request.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub reservations: IntCounter,
    pub sold_out_rejections: IntCounterVec,
    pub buy_refusals: IntCounterVec,
    pub preheats: IntCounter,
    pub sold_out_flags: IntGauge,
    /// Gauges filled in at scrape time from Redis, by product.
    pub queue_gauges: IntGaugeVec,
    pub orders_written: IntCounter,
    pub dead_letters: IntCounter,
    pub order_batch_size: Histogram,
    pub order_write_retries: IntCounter,
    pub orders_reclaimed: IntCounter,
    pub orders_paid: IntCounter,
    pub orders_cancelled: IntCounter,
    pub stock_returned: IntCounter,
    pub changes_relayed: IntCounter,
    pub changes_applied: IntCounter,
    /// Failed rounds of the change relay, by stage (`relay`, `apply`): a
    /// change that cannot be applied retries every second, and counts.
    pub change_failures: IntCounterVec,
    pub stock_drift: IntGaugeVec,
    pub reconcile_repairs: IntCounter,
    /// Filled in at scrape time: whether Redis and the database answer.
    pub ready: IntGaugeVec,
    /// Filled in at scrape time from Redis, by live product: stock left and
    /// whether the sold-out registry lists it (the alert rules compare them).
    pub stock_left: IntGaugeVec,
    pub sold_out_listed: IntGaugeVec,
    /// The last minutes of each item, for the operations page's charts.
    pub history: crate::history::History,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .unwrap();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )
        .unwrap();
        let reservations = IntCounter::new(
            "seckill_reservations_total",
            "Buys that reserved stock and queued an order (202)",
        )
        .unwrap();
        let sold_out_rejections = IntCounterVec::new(
            Opts::new(
                "seckill_sold_out_rejections_total",
                "Buys refused as sold out, by where the answer came from (local_flag: no Redis call)",
            ),
            &["source"],
        )
        .unwrap();
        let buy_refusals = IntCounterVec::new(
            Opts::new("seckill_buy_refusals_total", "Buys refused, by error code"),
            &["reason"],
        )
        .unwrap();
        let preheats = IntCounter::new(
            "seckill_preheat_recoveries_total",
            "Items re-loaded into Redis after Redis reported them unknown",
        )
        .unwrap();
        let sold_out_flags = IntGauge::new(
            "seckill_sold_out_flags",
            "Products this process currently holds a sold-out flag for",
        )
        .unwrap();
        let queue_gauges = IntGaugeVec::new(
            Opts::new(
                "seckill_queue",
                "Order queue state read from Redis at scrape time",
            ),
            &["product", "measure"],
        )
        .unwrap();
        let orders_written = IntCounter::new(
            "seckill_orders_written_total",
            "Orders inserted into the database by this process's consumers",
        )
        .unwrap();
        let dead_letters = IntCounter::new(
            "seckill_dead_letters_total",
            "Order requests moved to a dead-letter stream (stock returned) by this process",
        )
        .unwrap();
        let order_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "seckill_order_batch_size",
                "Order requests per consumer batch",
            )
            .buckets(vec![
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
            ]),
        )
        .unwrap();
        let order_write_retries = IntCounter::new(
            "seckill_order_write_retries_total",
            "Batch writes retried because the database was unavailable",
        )
        .unwrap();
        let orders_reclaimed = IntCounter::new(
            "seckill_orders_reclaimed_total",
            "Order requests taken over from consumers that stopped acknowledging",
        )
        .unwrap();
        let orders_paid = IntCounter::new(
            "seckill_orders_paid_total",
            "Orders paid through this process",
        )
        .unwrap();
        let orders_cancelled = IntCounter::new(
            "seckill_orders_cancelled_total",
            "Unpaid orders this process cancelled at their payment deadline",
        )
        .unwrap();
        let stock_returned = IntCounter::new(
            "seckill_stock_returned_total",
            "Units this process gave back to Redis stock (cancellations and dead letters)",
        )
        .unwrap();
        let changes_relayed = IntCounter::new(
            "seckill_catalogue_changes_relayed_total",
            "Captured catalogue changes this process relayed to the change stream",
        )
        .unwrap();
        let changes_applied = IntCounter::new(
            "seckill_catalogue_changes_applied_total",
            "Catalogue changes this process applied to Redis",
        )
        .unwrap();
        let change_failures = IntCounterVec::new(
            Opts::new(
                "seckill_catalogue_change_failures_total",
                "Rounds of relaying (stage relay) or applying (stage apply) catalogue changes that failed and will be retried",
            ),
            &["stage"],
        )
        .unwrap();
        let stock_drift = IntGaugeVec::new(
            Opts::new(
                "seckill_stock_drift",
                "Redis stock + queued reservations - database stock, at the last quiet reconciliation",
            ),
            &["product"],
        )
        .unwrap();
        let reconcile_repairs = IntCounter::new(
            "seckill_reconcile_repairs_total",
            "Items whose Redis stock reconciliation set back to the database's figure",
        )
        .unwrap();
        let ready = IntGaugeVec::new(
            Opts::new(
                "seckill_ready",
                "1 when the dependency answered this scrape's readiness check, else 0",
            ),
            &["dependency"],
        )
        .unwrap();
        let stock_left = IntGaugeVec::new(
            Opts::new(
                "seckill_stock_left",
                "Live stock in Redis, by product, read at scrape time",
            ),
            &["product"],
        )
        .unwrap();
        let sold_out_listed = IntGaugeVec::new(
            Opts::new(
                "seckill_sold_out_listed",
                "1 when Redis' sold-out registry lists the live product, read at scrape time",
            ),
            &["product"],
        )
        .unwrap();
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(reservations.clone()),
            Box::new(sold_out_rejections.clone()),
            Box::new(buy_refusals.clone()),
            Box::new(preheats.clone()),
            Box::new(sold_out_flags.clone()),
            Box::new(queue_gauges.clone()),
            Box::new(orders_written.clone()),
            Box::new(dead_letters.clone()),
            Box::new(order_batch_size.clone()),
            Box::new(order_write_retries.clone()),
            Box::new(orders_reclaimed.clone()),
            Box::new(orders_paid.clone()),
            Box::new(orders_cancelled.clone()),
            Box::new(stock_returned.clone()),
            Box::new(changes_relayed.clone()),
            Box::new(changes_applied.clone()),
            Box::new(change_failures.clone()),
            Box::new(stock_drift.clone()),
            Box::new(reconcile_repairs.clone()),
            Box::new(ready.clone()),
            Box::new(stock_left.clone()),
            Box::new(sold_out_listed.clone()),
        ] {
            registry.register(collector).unwrap();
        }
        Self {
            registry,
            http_requests,
            http_duration,
            reservations,
            sold_out_rejections,
            buy_refusals,
            preheats,
            sold_out_flags,
            queue_gauges,
            orders_written,
            dead_letters,
            order_batch_size,
            order_write_retries,
            orders_reclaimed,
            orders_paid,
            orders_cancelled,
            stock_returned,
            changes_relayed,
            changes_applied,
            change_failures,
            stock_drift,
            reconcile_repairs,
            ready,
            stock_left,
            sold_out_listed,
            history: Default::default(),
        }
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding of metrics cannot fail");
        String::from_utf8(buffer).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
