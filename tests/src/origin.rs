//! A real `seckill-origin` process, started with a test's Redis and
//! database, on a port it picks itself (read back from its stdout line).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::Api;
use crate::database::TestDatabase;
use crate::paths::{test_output_dir, workspace_binary};
use crate::redis_server::RedisServer;

#[derive(Debug, Clone)]
pub struct OriginOptions {
    pub label: String,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl OriginOptions {
    /// An origin on `redis` and `db` with the test secrets, demo login on
    /// and a private key prefix. `label` names its log file.
    pub fn new(label: &str, redis: &RedisServer, db: &TestDatabase) -> Self {
        Self::with_urls(label, &redis.url(), db.url())
    }

    pub fn with_urls(label: &str, redis_url: &str, database_url: &str) -> Self {
        let env = [
            ("REDIS_URL", redis_url),
            ("DATABASE_URL", database_url),
            ("SECKILL_BIND", "127.0.0.1:0"),
            ("SECKILL_TOKEN_SECRET", crate::TOKEN_SECRET),
            ("SECKILL_ADMIN_TOKEN", crate::ADMIN_TOKEN),
            ("SECKILL_DEMO_LOGIN", "1"),
            ("RUST_LOG", "info,sqlx=warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self {
            label: label.to_string(),
            env,
            args: Vec::new(),
        }
    }

    /// Sets (or overrides) one environment variable.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs the process with its wall clock `seconds` ahead of the
    /// machine's (libfaketime; its monotonic clock is left alone), as on a
    /// host whose clock is wrong.
    pub fn clock_ahead(self, seconds: u64) -> Self {
        let library = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
        assert!(
            std::path::Path::new(library).exists(),
            "libfaketime is not installed: install it with `apt-get install faketime` \
             (scripts/test does this when run as root)"
        );
        self.env("LD_PRELOAD", library)
            .env("FAKETIME", format!("+{seconds}s"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", 1)
    }

    /// Runs a subcommand (e.g. `worker`) instead of the HTTP server.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }
}

pub struct Origin {
    child: Option<Child>,
    url: Option<String>,
    log: PathBuf,
}

impl Origin {
    /// Starts the process and, for the HTTP server, waits for its
    /// "listening on" line.
    pub async fn start(options: OriginOptions) -> Self {
        let dir = test_output_dir(&options.label);
        let log = dir.join(format!("origin-{}.log", crate::unique_suffix()));
        let stderr = std::fs::File::create(&log).expect("create origin log");
        let mut command = Command::new(workspace_binary("seckill-origin"));
        command
            .args(&options.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start seckill-origin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let is_worker = options.args.first().is_some_and(|a| a == "worker");
        let url = if is_worker {
            // Workers print a ready line too; wait for it so callers know
            // the consumers are running.
            Self::wait_for_line(&mut lines, "seckill-origin worker ready", &log).await;
            None
        } else {
            let line = Self::wait_for_line(&mut lines, "seckill-origin listening on ", &log).await;
            Some(
                line.trim_start_matches("seckill-origin listening on ")
                    .trim()
                    .to_string(),
            )
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child: Some(child),
            url,
            log,
        }
    }

    async fn wait_for_line(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        prefix: &str,
        log: &std::path::Path,
    ) -> String {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "seckill-origin did not print {prefix:?}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }

    pub fn url(&self) -> &str {
        self.url
            .as_deref()
            .expect("a worker process serves no HTTP")
    }

    pub fn api(&self) -> Api {
        Api::new(self.url())
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("running process")
    }

    /// SIGTERM, then wait for a graceful exit; returns the exit code.
    pub async fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = child.kill().await;
                panic!(
                    "seckill-origin did not stop within 20 s of SIGTERM; log: {}",
                    self.log.display()
                );
            }
        }
    }

    /// SIGKILL, like a crash: no chance to finish anything.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }
}
