//! A private `redis-server` per test, on a free port, that the test can kill
//! (SIGKILL, like a crash) and restart on the same port and data directory.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::paths::ScratchDir;

pub struct RedisServer {
    port: u16,
    dir: ScratchDir,
    persistence: Persistence,
    child: Option<Child>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: a restart starts empty.
    None,
    /// `appendonly yes`, `appendfsync always`: every write is on disk
    /// before Redis answers it.
    AofAlways,
}

/// Panics, saying how to install it, when a Redis tool is not on the PATH.
pub(crate) fn require_redis_tool(binary: &str) {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{binary} is not installed: install it with `apt-get install redis-server` \
         (redis-tools; scripts/test does this when run as root)"
    );
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(Persistence::None).await
    }

    pub async fn start_with(persistence: Persistence) -> Self {
        let mut server = Self {
            port: crate::free_port(),
            dir: ScratchDir::new("redis"),
            persistence,
            child: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        require_redis_tool("redis-server");
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        match self.persistence {
            Persistence::None => {
                command.args(["--appendonly", "no"]);
            }
            Persistence::AofAlways => {
                command.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(command.spawn().expect("start redis-server"));
        let url = self.url();
        crate::eventually(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || {
                let url = url.clone();
                async move {
                    let client = redis::Client::open(url).ok()?;
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
                    (pong == "PONG").then_some(())
                }
            },
        )
        .await;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown save, no goodbye to clients, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// How many times `command` (lower case, e.g. "evalsha") has run, from
    /// `INFO commandstats`.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let mut conn = self.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .expect("INFO commandstats");
        calls_in(&info, command)
    }
}

/// How many times `command` ran, read from `INFO commandstats` text.
pub fn calls_in(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
