//! `seckill-origin`: the origin HTTP service.
//!
//! Usage: `seckill-origin [serve]`. Configuration comes from the environment
//! (see `API.md` and the README). Stops gracefully on SIGTERM or Ctrl-C.

use std::io::Write;
use std::process::ExitCode;

use seckill_origin::config::Config;
use seckill_origin::shutdown::cancel_on_signal;
use seckill_origin::startup::Application;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: seckill-origin [serve]\n\n  serve   run the HTTP origin (default)\n\nConfiguration is read from the environment; see README.md.";

#[tokio::main]
async fn main() -> ExitCode {
    seckill_origin::telemetry::init();
    let command = std::env::args().nth(1);
    match command.as_deref() {
        None | Some("serve") => {}
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("seckill-origin: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("seckill-origin: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
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
