//! The load engine: `concurrency` workers, each on its own connection,
//! take request numbers from a shared counter until `total` are sent,
//! either as fast as answers come back (closed loop) or paced to a target
//! rate (open loop, for latency at a given load).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{Connection, Target};
use crate::stats::Recorder;

/// One request to send.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub body: Option<Bytes>,
}

pub struct Plan {
    pub target: Target,
    pub concurrency: usize,
    pub total: usize,
    /// Requests per second to pace to; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// When the first request may go (everyone fires at the start time).
    pub start_at: Instant,
    pub progress: bool,
    pub label: String,
}

/// What a run gives back: the merged record and each request's status, by
/// request number (0: no answer).
pub struct Outcome {
    pub recorder: Recorder,
    pub statuses: Vec<u16>,
}

pub async fn run(plan: Plan, call: Arc<dyn Fn(usize) -> Call + Send + Sync>) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(&plan);
    let ticker = bar.clone().map(|bar| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (next, done, call) = (next.clone(), done.clone(), call.clone());
        let (target, total, rate, start_at) =
            (plan.target.clone(), plan.total, plan.rate, plan.start_at);
        workers.spawn(async move {
            let mut connection = Connection::new(target);
            let mut recorder = Recorder::new(start_at);
            let mut statuses = Vec::new();
            tokio::time::sleep_until(start_at.into()).await;
            loop {
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= total {
                    break;
                }
                if let Some(rate) = rate {
                    let due = start_at + Duration::from_secs_f64(number as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let request = call(number);
                let sent = Instant::now();
                let answer = connection
                    .send(
                        request.method,
                        &request.path,
                        request.token.as_deref(),
                        request.body,
                    )
                    .await;
                let latency = sent.elapsed();
                let (status, edge) = match &answer {
                    Ok(answer) => (answer.status.as_u16(), answer.served_by_edge),
                    Err(_) => (0, false),
                };
                recorder.record(status, edge, sent, latency);
                statuses.push((number, status));
                done.fetch_add(1, Ordering::Relaxed);
            }
            (recorder, statuses)
        });
    }

    let mut recorder = Recorder::new(plan.start_at);
    let mut statuses = vec![0u16; plan.total];
    while let Some(finished) = workers.join_next().await {
        let (worker_recorder, worker_statuses) = finished.expect("a load worker panicked");
        recorder.merge(&worker_recorder);
        for (number, status) in worker_statuses {
            statuses[number] = status;
        }
    }
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Outcome { recorder, statuses }
}

fn progress_bar(plan: &Plan) -> Option<ProgressBar> {
    if !plan.progress {
        return None;
    }
    let bar = ProgressBar::new(plan.total as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec:>12} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(plan.label.clone());
    Some(bar)
}
