//! Latency and throughput, recorded per worker without locks and merged at
//! the end: a total HDR histogram (3 significant digits) and one per status,
//! and per 100 ms a small histogram (1 digit) and status counts for the
//! timelines the charts draw — fine enough to see a one-second rush.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency told apart (longer ones count as this).
const MAX_LATENCY_US: u64 = 60_000_000;
const MAX_TIMELINE_LATENCY_US: u64 = 10_000_000;
/// Width of one timeline bucket.
const BUCKET_MS: u64 = 100;

#[derive(Clone)]
struct Second {
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    served_by_edge: u64,
    latency: Histogram<u32>,
}

impl Second {
    fn new() -> Self {
        Self {
            requests: 0,
            statuses: BTreeMap::new(),
            served_by_edge: 0,
            latency: Histogram::new_with_max(MAX_TIMELINE_LATENCY_US, 1).expect("histogram bounds"),
        }
    }
}

/// One worker's record (or, after `merge`, everyone's).
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    seconds: Vec<Second>,
    total: Histogram<u64>,
    /// The same latencies by status: a run's admitted buys (`202`) are read
    /// apart from its refusals.
    by_status: BTreeMap<u16, Histogram<u64>>,
    /// Answers marked `x-served-by: edge`, by status: a `503` of the edge
    /// itself (`sale_busy`) apart from one of a proxy in front of it.
    edge_statuses: BTreeMap<u16, u64>,
    errors: u64,
    last: Instant,
}

/// `status` 0 stands for "no answer" (a connection error).
impl Recorder {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            seconds: Vec::new(),
            total: total_histogram(),
            by_status: BTreeMap::new(),
            edge_statuses: BTreeMap::new(),
            errors: 0,
            last: start,
        }
    }

    pub fn record(&mut self, status: u16, served_by_edge: bool, sent: Instant, latency: Duration) {
        let at =
            (sent.saturating_duration_since(self.start).as_millis() as u64 / BUCKET_MS) as usize;
        while self.seconds.len() <= at {
            self.seconds.push(Second::new());
        }
        let us = (latency.as_micros() as u64).max(1);
        let second = &mut self.seconds[at];
        second.requests += 1;
        *second.statuses.entry(status).or_default() += 1;
        second.served_by_edge += u64::from(served_by_edge);
        second
            .latency
            .saturating_record(us.min(MAX_TIMELINE_LATENCY_US));
        self.total.saturating_record(us.min(MAX_LATENCY_US));
        self.by_status
            .entry(status)
            .or_insert_with(total_histogram)
            .saturating_record(us.min(MAX_LATENCY_US));
        if served_by_edge {
            *self.edge_statuses.entry(status).or_default() += 1;
        }
        if status == 0 {
            self.errors += 1;
        }
        self.last = self.last.max(sent + latency);
    }

    pub fn merge(&mut self, other: &Recorder) {
        while self.seconds.len() < other.seconds.len() {
            self.seconds.push(Second::new());
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.requests += theirs.requests;
            for (status, count) in &theirs.statuses {
                *mine.statuses.entry(*status).or_default() += count;
            }
            mine.served_by_edge += theirs.served_by_edge;
            mine.latency.add(&theirs.latency).expect("same bounds");
        }
        self.total.add(&other.total).expect("same bounds");
        for (status, theirs) in &other.by_status {
            self.by_status
                .entry(*status)
                .or_insert_with(total_histogram)
                .add(theirs)
                .expect("same bounds");
        }
        for (status, count) in &other.edge_statuses {
            *self.edge_statuses.entry(*status).or_default() += count;
        }
        self.errors += other.errors;
        self.last = self.last.max(other.last);
    }

    pub fn summary(&self) -> Summary {
        let requests = self.total.len();
        let elapsed = self
            .last
            .saturating_duration_since(self.start)
            .as_secs_f64()
            .max(1e-9);
        let mut by_status = BTreeMap::new();
        let mut served_by_edge = 0;
        for second in &self.seconds {
            for (status, count) in &second.statuses {
                *by_status.entry(status_name(*status)).or_default() += count;
            }
            served_by_edge += second.served_by_edge;
        }
        Summary {
            requests,
            seconds: elapsed,
            requests_per_second: requests as f64 / elapsed,
            by_status,
            connection_errors: self.errors,
            served_by_edge,
            served_by_edge_by_status: self
                .edge_statuses
                .iter()
                .map(|(status, count)| (status_name(*status), *count))
                .collect(),
            latency_ms: Percentiles::of(&self.total),
            latency_ms_by_status: self
                .by_status
                .iter()
                .map(|(status, histogram)| (status_name(*status), Percentiles::of(histogram)))
                .collect(),
            timeline: self
                .seconds
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let per_second = 1_000 / BUCKET_MS;
                    TimelinePoint {
                        second: (i as u64 * BUCKET_MS) as f64 / 1_000.0,
                        requests_per_second: s.requests * per_second,
                        p50_ms: s.latency.value_at_quantile(0.5) as f64 / 1_000.0,
                        p99_ms: s.latency.value_at_quantile(0.99) as f64 / 1_000.0,
                        statuses_per_second: s
                            .statuses
                            .iter()
                            .map(|(k, v)| (status_name(*k), v * per_second))
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

fn total_histogram() -> Histogram<u64> {
    Histogram::new_with_max(MAX_LATENCY_US, 3).expect("histogram bounds")
}

fn status_name(status: u16) -> String {
    if status == 0 {
        "no_answer".into()
    } else {
        status.to_string()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
        Self {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: histogram.max() as f64 / 1_000.0,
        }
    }
}

/// One 100 ms bucket of a run, with counts scaled to per-second rates.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: f64,
    pub requests_per_second: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub statuses_per_second: BTreeMap<String, u64>,
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub by_status: BTreeMap<String, u64>,
    pub connection_errors: u64,
    pub served_by_edge: u64,
    /// Of `by_status`, the answers the edge gave itself.
    pub served_by_edge_by_status: BTreeMap<String, u64>,
    pub latency_ms: Percentiles,
    /// Latency of the answers with each status ("202", "409", "no_answer").
    pub latency_ms_by_status: BTreeMap<String, Percentiles>,
    pub timeline: Vec<TimelinePoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_recorders_add_up() {
        let start = Instant::now();
        let mut a = Recorder::new(start);
        let mut b = Recorder::new(start);
        a.record(202, false, start, Duration::from_millis(2));
        b.record(
            409,
            true,
            start + Duration::from_millis(1_500),
            Duration::from_millis(4),
        );
        b.record(
            0,
            false,
            start + Duration::from_millis(1_600),
            Duration::from_millis(1),
        );
        a.merge(&b);
        let summary = a.summary();
        assert_eq!(summary.requests, 3);
        assert_eq!(summary.by_status["202"], 1);
        assert_eq!(summary.by_status["409"], 1);
        assert_eq!(summary.by_status["no_answer"], 1);
        assert_eq!(summary.connection_errors, 1);
        assert_eq!(summary.served_by_edge, 1);
        assert_eq!(summary.served_by_edge_by_status.len(), 1);
        assert_eq!(summary.served_by_edge_by_status["409"], 1);
        assert_eq!(summary.timeline.len(), 17, "100 ms buckets up to 1.6 s");
        assert_eq!(summary.timeline[15].requests_per_second, 10);
        assert_eq!(summary.timeline[16].statuses_per_second["no_answer"], 10);
        assert!(summary.latency_ms.max >= 3.9);
        let accepted = &summary.latency_ms_by_status["202"];
        assert!((1.9..=2.1).contains(&accepted.p50) && accepted.max < 2.1);
        assert!(summary.latency_ms_by_status["409"].p50 >= 3.9);
    }
}
