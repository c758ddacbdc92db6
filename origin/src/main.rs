//! `seckill-origin`: the origin HTTP service, or (`worker`) order consumers
//! alone. Settings come from the environment or flags (`--help` lists them
//! all). Stops gracefully on SIGTERM or Ctrl-C.

use std::io::Write;
use std::process::ExitCode;

use seckill_origin::config::{Cli, CliError, Command, Config};
use seckill_origin::shutdown::Shutdown;
use seckill_origin::startup::{Application, Worker};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::from_env_and_args() {
        Ok(cli) => cli,
        Err(CliError::Clap(err)) => {
            // --help and --version print and succeed; usage errors fail.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
        Err(CliError::Config(err)) => {
            eprintln!("seckill-origin: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    seckill_origin::telemetry::init(cli.config.log_format);
    let shutdown = Shutdown::new();
    shutdown.on_signal();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config, shutdown).await,
        Command::Worker => work(cli.config, shutdown).await,
    }
}

async fn serve(config: Config, shutdown: Shutdown) -> ExitCode {
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

async fn work(config: Config, shutdown: Shutdown) -> ExitCode {
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
