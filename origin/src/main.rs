//! `seckill-origin`: the origin HTTP service.
//!
//! Usage: `seckill-origin [serve|worker]`. Configuration comes from the environment
//! (see `API.md` and the README). Stops gracefully on SIGTERM or Ctrl-C.

use std::io::Write;
use std::process::ExitCode;

use seckill_origin::config::Config;
use seckill_origin::shutdown::cancel_on_signal;
use seckill_origin::startup::{Application, Worker};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: seckill-origin [serve|worker]\n\n  serve   run the HTTP origin (default), with SECKILL_CONSUMERS order consumers inside\n  worker  run order consumers only (SECKILL_CONSUMERS of them, at least 1), no HTTP\n\nConfiguration is read from the environment; see README.md.";

#[tokio::main]
async fn main() -> ExitCode {
    seckill_origin::telemetry::init();
    let command = std::env::args().nth(1);
    let worker = match command.as_deref() {
        None | Some("serve") => false,
        Some("worker") => true,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("seckill-origin: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("seckill-origin: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    if worker {
        return run_worker(config, shutdown).await;
    }
    let app = match Application::build(config, shutdown).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("seckill-origin: cannot start: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    // A fixed line on stdout that scripts and tests wait for.
    println!("seckill-origin listening on http://{}", app.local_addr());
    let _ = std::io::stdout().flush();
    match app.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("seckill-origin: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_worker(config: Config, shutdown: CancellationToken) -> ExitCode {
    let worker = match Worker::build(config, shutdown).await {
        Ok(worker) => worker,
        Err(err) => {
            eprintln!("seckill-origin worker: cannot start: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "seckill-origin worker ready ({} consumers)",
        worker.consumers()
    );
    let _ = std::io::stdout().flush();
    match worker.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("seckill-origin worker: {err:#}");
            ExitCode::FAILURE
        }
    }
}
