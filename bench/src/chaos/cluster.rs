//! The deployment the chaos soak runs and breaks: its own `redis-server`
//! (append-only file, `appendfsync always`), a fresh PostgreSQL database,
//! origin processes and a separate worker, with a TCP proxy in front of the
//! database (shared by every process, to cut or slow it) and one in front
//! of Redis per origin (to cut one origin off from pub/sub). Every process
//! listens on loopback only and is killed with the soak.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use seckill_bench::proxy::TcpProxy;
use sqlx::{Connection, Executor, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The token secret and admin token the soak's origins run with.
pub const TOKEN_SECRET: &str = "chaos-token-secret-0123456789";
pub const ADMIN_TOKEN: &str = "chaos-admin-token-0123456789";

async fn redis_answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
    pong.is_ok_and(|p| p == "PONG")
}

/// A `redis-server` on a fixed port and data directory, so a restart
/// comes back where clients expect it, with or without its data.
pub struct RedisProcess {
    binary: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisProcess {
    pub async fn start(binary: &str, dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut redis = Self {
            binary: binary.to_string(),
            port: seckill_bench::free_port()?,
            dir,
            child: None,
        };
        redis.spawn().await?;
        Ok(redis)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (install redis-server)", self.binary))?;
        self.child = Some(child);
        for _ in 0..200 {
            if redis_answers(&self.url()).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server did not answer PING within 10 s")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown save, like a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts again on the same port; `empty` removes its data first (a
    /// restart without persistence, or a replica promoted empty).
    pub async fn restart(&mut self, empty: bool) -> anyhow::Result<()> {
        self.kill().await;
        if empty {
            for entry in std::fs::read_dir(&self.dir)? {
                let path = entry?.path();
                if path.file_name().is_some_and(|n| n == "redis.log") {
                    continue;
                }
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        self.spawn().await
    }
}

/// A fresh PostgreSQL database for one soak, dropped at the end unless the
/// audit failed (then it is kept for inspection).
pub struct Database {
    admin_url: String,
    pub name: String,
    pub port: u16,
    /// `postgres://…/<name>` straight to the server.
    pub url: String,
}

impl Database {
    pub async fn create(admin_url: &str, name: String) -> anyhow::Result<Self> {
        let mut admin = PgConnection::connect(admin_url).await.with_context(|| {
            format!("PostgreSQL is not reachable at {admin_url}: start it or pass --postgres-url")
        })?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        let _ = admin.close().await;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("the PostgreSQL URL ends in /<database>")?;
        let port = url_port(admin_url).unwrap_or(5432);
        Ok(Self {
            admin_url: admin_url.to_string(),
            url: format!("{base}/{name}"),
            name,
            port,
        })
    }

    /// The same database through `proxy` (what the origins use).
    pub fn url_through(&self, proxy: &TcpProxy) -> String {
        self.url.replacen(
            &format!(":{}/", self.port),
            &format!(":{}/", proxy.port()),
            1,
        )
    }

    pub async fn drop_database(&self) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
            let _ = admin.close().await;
        }
    }
}

fn url_port(url: &str) -> Option<u16> {
    let after_at = url.rsplit_once('@').map(|(_, h)| h).unwrap_or(url);
    let host_port = after_at.split('/').next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// What an origin or worker process runs as.
#[derive(Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub binary: PathBuf,
    /// `worker`, or empty for the HTTP server.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The HTTP port (fixed, so a restarted origin is where buyers look).
    pub port: Option<u16>,
    pub log: PathBuf,
}

/// A `seckill-origin` process that the soak kills and starts again.
pub struct Process {
    pub spec: ProcessSpec,
    child: Option<Child>,
    pub starts: u32,
}

impl Process {
    pub fn new(spec: ProcessSpec) -> Self {
        Self {
            spec,
            child: None,
            starts: 0,
        }
    }

    pub fn url(&self) -> Option<String> {
        self.spec.port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// Starts the process and waits for its ready line.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)?;
        let mut command = Command::new(&self.spec.binary);
        command
            .args(&self.spec.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.spec.binary.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = if self.spec.args.first().is_some_and(|a| a == "worker") {
            "seckill-origin worker ready"
        } else {
            "seckill-origin listening on "
        };
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(ready) {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(found, Ok(true)) {
            let _ = child.kill().await;
            bail!(
                "{} did not become ready; see {}",
                self.spec.name,
                self.spec.log.display()
            );
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL, like a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM and a graceful exit (at the end of the soak).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// The origin binary next to this one (both built by `cargo build`).
pub fn default_origin_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the executable has a directory")?;
    Ok(dir.join("seckill-origin"))
}

pub fn ensure_file(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --bins`, or pass --origin-bin",
            path.display()
        );
    }
    Ok(())
}
