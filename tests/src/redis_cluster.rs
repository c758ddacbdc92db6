//! A private Redis Cluster per test: three primaries and three replicas on
//! free loopback ports (`redis-server --cluster-enabled yes`, joined with
//! `redis-cli --cluster create … --cluster-replicas 1`), with a short node
//! timeout so a killed primary is replaced within seconds; every process
//! is stopped and its directory removed on drop.
//!
//! [`TestRedis`] is one Redis or a cluster, so a suite runs the same test
//! against both backends ([`RedisBackend`]).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::app::AppSettings;
use crate::paths::ScratchDir;
use crate::redis_server::{require_redis_tool, RedisServer};

/// How long a primary may be silent before the others fail it over (ms).
pub const NODE_TIMEOUT_MS: u64 = 1_000;

const PRIMARIES: usize = 3;
const NODES: usize = PRIMARIES * 2;

struct Node {
    port: u16,
    child: Option<Child>,
    /// SIGSTOPped: running, but answering nothing.
    stopped: bool,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: ScratchDir,
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    seckill_bench::free_cluster_port(taken).expect("a free port")
}

impl RedisCluster {
    /// Starts six nodes, joins them into three shards of a primary and a
    /// replica, and waits until every node says `cluster_state:ok` and
    /// every replica is in sync.
    pub async fn start() -> Self {
        require_redis_tool("redis-server");
        require_redis_tool("redis-cli");
        let dir = ScratchDir::new("redis-cluster");
        let mut ports = Vec::new();
        for _ in 0..NODES {
            ports.push(free_cluster_port(&ports));
        }
        let mut cluster = Self {
            nodes: ports
                .iter()
                .map(|&port| Node {
                    port,
                    child: None,
                    stopped: false,
                })
                .collect(),
            dir,
        };
        for index in 0..NODES {
            cluster.spawn(index);
        }
        for port in &ports {
            wait_for_ping(*port).await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_healthy().await;
        cluster
    }

    fn spawn(&mut self, index: usize) {
        let port = self.nodes[index].port;
        let node_dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("create node dir");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--cluster-node-timeout")
            .arg(NODE_TIMEOUT_MS.to_string())
            .args(["--appendonly", "no", "--save", ""])
            .arg("--dir")
            .arg(&node_dir)
            .arg("--logfile")
            .arg(node_dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.nodes[index].child = Some(child);
    }

    /// Every live node says `cluster_state:ok`, and every live replica's
    /// link to its primary is up.
    pub async fn wait_until_healthy(&self) {
        let ports: Vec<u16> = self.live_ports();
        crate::eventually(
            Duration::from_secs(30),
            "the test cluster to be ok on every node",
            || {
                let ports = ports.clone();
                async move {
                    for port in ports {
                        let info = node_info(port, "CLUSTER", Some("INFO")).await?;
                        if !info.contains("cluster_state:ok") {
                            return None;
                        }
                        let replication = node_info(port, "INFO", Some("replication")).await?;
                        if replication.contains("role:slave")
                            && !replication.contains("master_link_status:up")
                        {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.stopped)
            .map(|n| n.port)
            .collect()
    }

    /// `host:port,…` of every node, for `REDIS_CLUSTER_NODES`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    pub async fn connection(&self) -> ClusterConnection {
        let urls: Vec<String> = self
            .live_ports()
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect();
        redis::cluster::ClusterClientBuilder::new(urls)
            .retries(10)
            .build()
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("connect to the test cluster")
    }

    /// The port of the primary that owns `key`'s slot now.
    pub async fn primary_of(&self, key: &str) -> u16 {
        self.primary_of_slot(seckill_shared::keys::slot_of(key.as_bytes()))
            .await
    }

    /// Each primary's port and the slot ranges it owns (from `CLUSTER
    /// SLOTS` as a live node sees it).
    pub async fn primaries(&self) -> Vec<(u16, Vec<(u16, u16)>)> {
        let mut conn = self.connection().await;
        let slots = conn
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .expect("CLUSTER SLOTS");
        slot_owners(slots)
    }

    /// Moves one slot, with its keys, to the primary on `to`, the way
    /// `redis-cli --cluster reshard` does: `IMPORTING`/`MIGRATING`, then
    /// `MIGRATE` of its keys in batches, then `SETSLOT … NODE` everywhere.
    /// Clients meet `ASK` and `TRYAGAIN` meanwhile and `MOVED` after.
    pub async fn move_slot(&self, slot: u16, to: u16) {
        let from = self.primary_of_slot(slot).await;
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (from_id, to_id) = (node_id(from).await, node_id(to).await);
        let mut source = node_connection(from).await.expect("source node");
        let mut target = node_connection(to).await.expect("target node");
        let setslot = |state: &str, id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .to_owned()
        };
        let _: () = setslot("IMPORTING", &from_id)
            .query_async(&mut target)
            .await
            .expect("SETSLOT IMPORTING");
        let _: () = setslot("MIGRATING", &to_id)
            .query_async(&mut source)
            .await
            .expect("SETSLOT MIGRATING");
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut source)
                .await
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5_000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut source)
                .await
                .expect("MIGRATE");
        }
        for port in [to, from] {
            let mut conn = node_connection(port).await.expect("a primary");
            let _: () = setslot("NODE", &to_id)
                .query_async(&mut conn)
                .await
                .expect("SETSLOT NODE");
        }
        for (port, _) in self.primaries().await {
            if port != to && port != from {
                if let Some(mut conn) = node_connection(port).await {
                    let _: redis::RedisResult<()> =
                        setslot("NODE", &to_id).query_async(&mut conn).await;
                }
            }
        }
        self.wait_until_healthy().await;
        // Replicas (and primaries not told directly) learn the move by
        // gossip: wait until every live node names the new owner.
        let ports = self.live_ports();
        crate::eventually(
            Duration::from_secs(15),
            "every node to see the slot on its new primary",
            || {
                let ports = ports.clone();
                async move {
                    for port in ports {
                        if owner_seen_by(port, slot).await != Some(to) {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
    }

    /// Makes the node on `port` tell clients (in `CLUSTER SLOTS`, redirects
    /// and gossip) to reach it on `announced` instead: a proxy there puts a
    /// cuttable path between a client and that node. Clients that connect
    /// afterwards use it once every live node lists it.
    pub async fn announce_port(&self, port: u16, announced: u16) {
        let mut conn = node_connection(port).await.expect("connect to the node");
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-announce-port")
            .arg(announced)
            .query_async(&mut conn)
            .await
            .expect("CONFIG SET cluster-announce-port");
        let listed = format!("127.0.0.1:{announced}@");
        let ports = self.live_ports();
        crate::eventually(
            Duration::from_secs(10),
            "every node to list the announced port",
            || {
                let (ports, listed) = (ports.clone(), listed.clone());
                async move {
                    for port in ports {
                        let nodes = node_info(port, "CLUSTER", Some("NODES")).await?;
                        if !nodes.contains(&listed) {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
    }

    /// The port of the primary that owns `slot` now.
    pub async fn primary_of_slot(&self, slot: u16) -> u16 {
        self.primaries()
            .await
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(port, _)| port)
            .unwrap_or_else(|| panic!("no primary owns slot {slot}"))
    }

    /// SIGKILL of the node on `port`, like a crash.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.stopped = false;
    }

    /// The port of the replica that follows the primary on `primary`.
    pub async fn replica_of(&self, primary: u16) -> u16 {
        let id = node_id(primary).await;
        let mut conn = node_connection(primary).await.expect("the primary");
        let replicas: Vec<String> = redis::cmd("CLUSTER")
            .arg("REPLICAS")
            .arg(&id)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER REPLICAS");
        // `<id> <ip>:<port>@<bus port> slave <primary id> …`
        replicas
            .first()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|address| address.split('@').next())
            .and_then(|address| address.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no replica follows {primary}: {replicas:?}"))
    }

    /// Makes the replica on `replica` fall behind its primary on `primary`
    /// for good: SIGSTOP, then the primary drops its replication link
    /// (`CLIENT KILL TYPE replica`), so nothing written from then on is
    /// sent to it, not even into socket buffers it would read on waking.
    pub async fn stop_replicating(&mut self, replica: u16, primary: u16) {
        self.signal(replica, "-STOP");
        let mut conn = node_connection(primary).await.expect("the primary");
        let _: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "replica"])
            .query_async(&mut conn)
            .await
            .expect("CLIENT KILL TYPE replica");
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .expect("INFO replication");
        assert!(
            info.contains("connected_slaves:0"),
            "the primary still feeds a replica: {info}"
        );
    }

    /// SIGCONT of a node stopped by [`Self::stop_replicating`].
    pub fn resume(&mut self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&mut self, port: u16, signal: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        let pid = node.child.as_ref().expect("a running node").id();
        let sent = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid}");
        node.stopped = signal == "-STOP";
    }

    /// Makes the replica on `replica` its shard's primary at once, however
    /// far behind it is (`CLUSTER FAILOVER TAKEOVER`: no agreement of the
    /// other primaries, no check of its data's age), and waits until it
    /// owns `slot`.
    pub async fn take_over(&self, replica: u16, slot: u16) {
        let mut conn = node_connection(replica).await.expect("the replica");
        let _: () = redis::cmd("CLUSTER")
            .arg(&["FAILOVER", "TAKEOVER"])
            .query_async(&mut conn)
            .await
            .expect("CLUSTER FAILOVER TAKEOVER");
        crate::eventually(
            Duration::from_secs(15),
            "the stale replica to own its shard's slots",
            || async move { (self.primary_of_slot(slot).await == replica).then_some(()) },
        )
        .await;
    }

    /// Starts a killed node again on its port and directory: it rejoins
    /// the cluster from its `nodes.conf` (as a replica, once its shard has
    /// failed over to the node that replaced it).
    pub async fn restart(&mut self, port: u16) {
        let index = self
            .nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of this cluster");
        assert!(self.nodes[index].child.is_none(), "node {port} is running");
        self.spawn(index);
        // A node that cannot start (its port taken meanwhile by another
        // test, say) says why in its log: fail with that, not a timeout.
        let log = || {
            let path = self.dir.path().join(port.to_string()).join("redis.log");
            std::fs::read_to_string(path).unwrap_or_default()
        };
        for _ in 0..300 {
            if answers_ping(port).await {
                return;
            }
            let child = self.nodes[index].child.as_mut().expect("just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("node {port} exited ({status}) on restart: {}", log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "node {port} did not answer PING within 30 s of its restart: {}",
            log()
        );
    }

    /// How often `command` (lower case) ran on the primaries, summed.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let mut total = 0;
        for port in self.live_ports() {
            if let Some(info) = node_info(port, "INFO", Some("commandstats")).await {
                total += crate::redis_server::calls_in(&info, command);
            }
        }
        total
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Each primary's port and its slot ranges, from a `CLUSTER SLOTS` reply.
fn slot_owners(slots: Value) -> Vec<(u16, Vec<(u16, u16)>)> {
    let ranges: Vec<(u16, u16, u16)> = redis::from_redis_value::<Vec<Vec<Value>>>(slots)
        .expect("CLUSTER SLOTS reply")
        .into_iter()
        .map(|range| {
            let start: u16 = redis::from_redis_value(range[0].clone()).unwrap();
            let end: u16 = redis::from_redis_value(range[1].clone()).unwrap();
            let primary: Vec<Value> = redis::from_redis_value(range[2].clone()).unwrap();
            let port: u16 = redis::from_redis_value(primary[1].clone()).unwrap();
            (start, end, port)
        })
        .collect();
    let mut by_port: Vec<(u16, Vec<(u16, u16)>)> = Vec::new();
    for (start, end, port) in ranges {
        match by_port.iter_mut().find(|(p, _)| *p == port) {
            Some((_, owned)) => owned.push((start, end)),
            None => by_port.push((port, vec![(start, end)])),
        }
    }
    by_port.sort();
    by_port
}

/// The port of the primary that owns `slot` as the node on `port` sees it.
async fn owner_seen_by(port: u16, slot: u16) -> Option<u16> {
    let slots: Value = node_info_value(port, "SLOTS").await?;
    slot_owners(slots)
        .into_iter()
        .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|(owner, _)| owner)
}

async fn node_info_value(port: u16, cluster_subcommand: &str) -> Option<Value> {
    let mut conn = node_connection(port).await?;
    redis::cmd("CLUSTER")
        .arg(cluster_subcommand)
        .query_async(&mut conn)
        .await
        .ok()
}

async fn node_connection(port: u16) -> Option<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}

async fn node_info(port: u16, command: &str, arg: Option<&str>) -> Option<String> {
    let mut conn = node_connection(port).await?;
    let mut cmd = redis::cmd(command);
    if let Some(arg) = arg {
        cmd.arg(arg);
    }
    cmd.query_async(&mut conn).await.ok()
}

async fn node_id(port: u16) -> String {
    node_info(port, "CLUSTER", Some("MYID"))
        .await
        .expect("CLUSTER MYID")
}

async fn wait_for_ping(port: u16) {
    crate::eventually(
        Duration::from_secs(10),
        "a cluster node to answer PING",
        || async move { answers_ping(port).await.then_some(()) },
    )
    .await;
}

async fn answers_ping(port: u16) -> bool {
    let Some(mut conn) = node_connection(port).await else {
        return false;
    };
    let pong: Option<String> = redis::cmd("PING").query_async(&mut conn).await.ok();
    pong.as_deref() == Some("PONG")
}

/// Which Redis a suite's test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisBackend {
    Single,
    Cluster,
}

/// One Redis or a cluster, started for one test.
pub enum TestRedis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    pub async fn start(backend: RedisBackend) -> Self {
        match backend {
            RedisBackend::Single => Self::Single(RedisServer::start().await),
            RedisBackend::Cluster => Self::Cluster(RedisCluster::start().await),
        }
    }

    /// `REDIS_URL` (one Redis) or `REDIS_CLUSTER_NODES` for a test app.
    pub fn settings(&self, settings: AppSettings) -> AppSettings {
        match self {
            Self::Single(server) => settings.set("REDIS_URL", server.url()),
            Self::Cluster(cluster) => settings.set("REDIS_CLUSTER_NODES", cluster.seeds()),
        }
    }

    /// The URL of one Redis; on a cluster, of a node (the test app is
    /// pointed at the cluster by [`Self::settings`]).
    pub fn url(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster(cluster) => format!("redis://127.0.0.1:{}", cluster.ports()[0]),
        }
    }

    pub async fn connection(&self) -> TestConn {
        match self {
            Self::Single(server) => TestConn::Single(server.connection().await),
            Self::Cluster(cluster) => TestConn::Cluster(cluster.connection().await),
        }
    }

    /// How often `command` (lower case) has run, on every node.
    pub async fn command_calls(&self, command: &str) -> u64 {
        match self {
            Self::Single(server) => server.command_calls(command).await,
            Self::Cluster(cluster) => cluster.command_calls(command).await,
        }
    }
}

/// A test's own connection to either backend.
#[derive(Clone)]
pub enum TestConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for TestConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}
