//! Configuration, declared once: every setting's variable, default and
//! meaning is the attribute on its field below. `seckill-origin --help`
//! prints them, the README's table is checked against them by a test, and
//! a missing secret or malformed value stops start-up with an error naming
//! the variable, so a typo in a deployment fails loudly instead of running
//! with a default.
//!
//! Each setting is an environment variable (what deployments use) and a
//! command-line flag of the same name in kebab case (what the test app
//! uses, so a test never depends on the environment it runs in).

use std::error::Error as _;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use seckill_shared::keys::RedisKeys;
use seckill_shared::token::TokenSecret;

use crate::store::redis::stock::ReplicaAcks;
use crate::store::redis::RedisTarget;
use crate::telemetry::LogFormat;

/// Shortest secret or admin token accepted: anything shorter is guessable.
const MIN_SECRET_LEN: usize = 16;

/// The command line: what to run, and the settings.
#[derive(Debug, Parser)]
#[command(
    name = "seckill-origin",
    version,
    about = "The flash-sale origin: stock in Redis, orders from a Redis Streams queue into SQLite or PostgreSQL.",
    after_help = "Every setting is read from its environment variable (shown as [env: …]) or its flag."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the HTTP origin (the default), with SECKILL_CONSUMERS order consumers inside.
    Serve,
    /// Run order consumers only (SECKILL_CONSUMERS of them, at least 1) and the deadline poller, no HTTP.
    Worker,
}

/// How the buy path is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuyMode {
    /// Stock reserved in Redis, orders written asynchronously (the design).
    Reserve,
    /// Every buy is one database transaction: the naive baseline the
    /// benchmarks compare against.
    SyncDb,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// origin listen address
    #[arg(long, env = "SECKILL_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// the Redis (7 or newer) that holds live stock and the order queue
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", value_parser = redis_url)]
    pub redis_url: String,
    /// seed nodes `host:port,host:port,…` of a Redis Cluster; when set, used instead of `REDIS_URL`
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_parser = cluster_nodes)]
    pub redis_cluster_nodes: Option<ClusterNodes>,
    /// the database: an SQLite file, or `postgres://user@host/db`
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = database_url)]
    pub database_url: String,
    /// HMAC key of member tokens (at least 16 bytes)
    #[arg(long, env = "SECKILL_TOKEN_SECRET", hide_env_values = true, value_parser = token_secret)]
    pub token_secret: TokenSecret,
    /// bearer token of `/admin` (at least 16 bytes)
    #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true, value_parser = admin_token)]
    pub admin_token: String,
    /// `1` serves `POST /api/session` (demo login)
    #[arg(long, env = "SECKILL_DEMO_LOGIN", default_value = "0", value_parser = flag, action = clap::ArgAction::Set)]
    pub demo_login: bool,
    /// seconds after which an unpaid order is cancelled
    #[arg(long, env = "SECKILL_PAY_TIMEOUT_S", default_value = "1200", value_parser = clap::value_parser!(u64).range(1..=7 * 86_400))]
    pub pay_timeout_s: u64,
    /// replicas of the item's shard that must confirm a buy (`WAIT`) before it is answered 202; `0`: do not wait
    #[arg(long, env = "SECKILL_REDIS_REPLICA_ACKS", default_value = "0", value_parser = clap::value_parser!(u16).range(0..=16))]
    pub redis_replica_acks: u16,
    /// how long (ms) a buy waits for those replicas before it is answered `outcome_unknown`
    #[arg(long, env = "SECKILL_REDIS_REPLICA_WAIT_MS", default_value = "200", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub redis_replica_wait_ms: u64,
    /// namespaces every Redis key
    #[arg(long, env = "SECKILL_KEY_PREFIX", default_value = "seckill:", value_parser = key_prefix)]
    pub key_prefix: RedisKeys,
    /// `sync-db`: the naive one-transaction-per-buy baseline, for benchmarks
    #[arg(long, env = "SECKILL_MODE", default_value = "reserve", value_enum)]
    pub mode: BuyMode,
    /// how long a local sold-out flag is trusted (ms)
    #[arg(long, env = "SECKILL_SOLDOUT_TTL_MS", default_value = "5000", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub soldout_ttl_ms: u64,
    /// how often (ms) sold-out flags and the registry are checked against real stock (`0`: never)
    #[arg(long, env = "SECKILL_SOLDOUT_CHECK_MS", default_value = "500", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub soldout_check_ms: u64,
    /// per-member burst of buys, per process
    #[arg(long, env = "SECKILL_RATE_LIMIT_BURST", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: u32,
    /// per-member buys per second after the burst, per process
    #[arg(long, env = "SECKILL_RATE_LIMIT_PER_S", default_value = "2", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_per_s: u32,
    /// product reads served from memory this long (ms)
    #[arg(long, env = "SECKILL_PRODUCT_CACHE_MS", default_value = "250", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub product_cache_ms: u64,
    /// lifetime of demo-login tokens (s)
    #[arg(long, env = "SECKILL_SESSION_TTL_S", default_value = "86400", value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub session_ttl_s: u64,
    /// database pool size
    #[arg(long, env = "SECKILL_DB_MAX_CONNECTIONS", default_value = "8", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub db_max_connections: u32,
    /// order consumers in this process (`worker`: at least 1)
    #[arg(long, env = "SECKILL_CONSUMERS", default_value = "1", value_parser = clap::value_parser!(u16).range(0..=64))]
    pub consumers: u16,
    /// order requests read per product stream and written per transaction
    #[arg(long, env = "SECKILL_CONSUMER_BATCH", default_value = "200", value_parser = clap::value_parser!(u16).range(1..=5_000))]
    pub consumer_batch: u16,
    /// idle time (ms) after which another consumer takes an entry over
    #[arg(long, env = "SECKILL_CLAIM_IDLE_MS", default_value = "30000", value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub claim_idle_ms: u64,
    /// deliveries after which an entry is dead-lettered
    #[arg(long, env = "SECKILL_MAX_DELIVERIES", default_value = "5", value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub max_deliveries: u64,
    /// how long (ms) acknowledged entries stay in the stream
    #[arg(long, env = "SECKILL_STREAM_RETENTION_MS", default_value = "60000", value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub stream_retention_ms: u64,
    /// deadline poll interval (ms; `0`: no poller in this process)
    #[arg(long, env = "SECKILL_CANCEL_POLL_MS", default_value = "200", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub cancel_poll_ms: u64,
    /// how long (ms) a claimed deadline belongs to its poller
    #[arg(long, env = "SECKILL_CANCEL_LEASE_MS", default_value = "30000", value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub cancel_lease_ms: u64,
    /// how often (s) the backstop sweep cancels overdue unpaid orders Redis lost track of (`0`: never)
    #[arg(long, env = "SECKILL_SWEEP_INTERVAL_S", default_value = "30", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub sweep_interval_s: u64,
    /// change-log poll interval (ms; `0`: this process does not relay or apply changes)
    #[arg(long, env = "SECKILL_CDC_POLL_MS", default_value = "500", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub cdc_poll_ms: u64,
    /// reconciliation interval (s; `0`: only on demand)
    #[arg(long, env = "SECKILL_RECONCILE_INTERVAL_S", default_value = "30", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub reconcile_interval_s: u64,
    /// `text` for people, `json` (one object per line) for log shippers
    #[arg(long, env = "SECKILL_LOG_FORMAT", default_value = "text", value_enum)]
    pub log_format: LogFormat,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://seckill.db?mode=rwc";

/// A setting that cannot be used, named by its variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl Cli {
    /// Reads the command line and the environment. `Err` carries clap's
    /// own answer for `--help`, `--version` and usage errors, which the
    /// caller prints and exits with.
    pub fn from_env_and_args() -> Result<Self, CliError> {
        Self::from_matches(Self::command().try_get_matches())
    }

    /// Reads only `args` (the program name first), ignoring the
    /// environment: what tests use.
    pub fn from_args_only<I, T>(args: I) -> Result<Self, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = Self::command().mut_args(|arg| arg.env(None::<&str>));
        Self::from_matches(command.try_get_matches_from(args))
    }

    /// Reads settings given as `(VARIABLE, value)` pairs, as if they were
    /// the environment, and nothing else: what the in-process test app
    /// uses.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, CliError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let command = Self::command();
        let mut args = vec!["seckill-origin".to_string()];
        for (var, value) in vars {
            let (var, value) = (var.as_ref(), value.as_ref());
            let long = command
                .get_arguments()
                .find(|arg| arg.get_env().is_some_and(|env| env == var))
                .and_then(|arg| arg.get_long())
                .ok_or_else(|| {
                    CliError::Config(ConfigError {
                        var: var.to_string(),
                        message: "is not a setting".into(),
                    })
                })?;
            args.push(format!("--{long}={value}"));
        }
        Self::from_args_only(args)
    }

    fn from_matches(matches: Result<clap::ArgMatches, clap::Error>) -> Result<Self, CliError> {
        let matches = matches.map_err(CliError::from_clap)?;
        Self::from_arg_matches(&matches).map_err(CliError::from_clap)
    }
}

/// Why the command line could not be used.
#[derive(Debug)]
pub enum CliError {
    /// A setting is missing or malformed.
    Config(ConfigError),
    /// `--help`, `--version` or a usage error: clap's own text.
    Clap(clap::Error),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(err) => err.fmt(f),
            Self::Clap(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for CliError {}

impl CliError {
    fn from_clap(err: clap::Error) -> Self {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        // The variable behind a flag, and whether its value is a secret.
        let setting = |text: &str| -> Option<(String, bool)> {
            let long = text.split_whitespace().next()?.strip_prefix("--")?;
            let command = Cli::command();
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(long))?;
            let var = arg.get_env()?.to_string_lossy().into_owned();
            Some((var, arg.is_hide_env_values_set()))
        };
        let var = match err.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => setting(arg),
            Some(ContextValue::Strings(args)) => args.first().and_then(|arg| setting(arg)),
            _ => None,
        };
        match (err.kind(), var) {
            (
                ErrorKind::InvalidValue
                | ErrorKind::ValueValidation
                | ErrorKind::MissingRequiredArgument,
                Some((var, secret)),
            ) => {
                let reason = err
                    .source()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "not an allowed value".into());
                let message = match (err.kind(), err.get(ContextKind::InvalidValue)) {
                    (ErrorKind::MissingRequiredArgument, _) => "is required".to_string(),
                    (_, Some(ContextValue::String(value))) if !secret => {
                        format!("{value:?} is not usable: {reason}")
                    }
                    _ => reason,
                };
                Self::Config(ConfigError { var, message })
            }
            _ => Self::Clap(err),
        }
    }
}

/// Seed nodes of a Redis Cluster, as `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodes(pub Vec<String>);

impl Config {
    /// The one Redis, or the cluster when `REDIS_CLUSTER_NODES` is set.
    pub fn redis_target(&self) -> RedisTarget {
        match &self.redis_cluster_nodes {
            Some(nodes) => RedisTarget::Cluster(nodes.0.clone()),
            None => RedisTarget::Single(self.redis_url.clone()),
        }
    }

    pub fn replica_acks(&self) -> ReplicaAcks {
        ReplicaAcks {
            replicas: self.redis_replica_acks,
            timeout: Duration::from_millis(self.redis_replica_wait_ms),
        }
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.key_prefix
    }

    pub fn pay_timeout(&self) -> Duration {
        Duration::from_secs(self.pay_timeout_s)
    }

    /// `None` when the setting is 0 (the job is off in this process).
    fn unless_zero(duration: Duration) -> Option<Duration> {
        (!duration.is_zero()).then_some(duration)
    }

    pub fn cancel_poll(&self) -> Option<Duration> {
        Self::unless_zero(Duration::from_millis(self.cancel_poll_ms))
    }

    pub fn soldout_check(&self) -> Option<Duration> {
        Self::unless_zero(Duration::from_millis(self.soldout_check_ms))
    }

    pub fn sweep_interval(&self) -> Option<Duration> {
        Self::unless_zero(Duration::from_secs(self.sweep_interval_s))
    }

    pub fn cdc_poll(&self) -> Option<Duration> {
        Self::unless_zero(Duration::from_millis(self.cdc_poll_ms))
    }

    pub fn reconcile_interval(&self) -> Option<Duration> {
        Self::unless_zero(Duration::from_secs(self.reconcile_interval_s))
    }
}

fn redis_url(text: &str) -> Result<String, String> {
    redis::Client::open(text)
        .map(|_| text.to_string())
        .map_err(|_| "not a valid redis:// URL".to_string())
}

fn cluster_nodes(text: &str) -> Result<ClusterNodes, String> {
    let nodes: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(str::to_string)
        .collect();
    if nodes.is_empty() {
        return Err("needs at least one host:port".to_string());
    }
    for node in &nodes {
        let port = node
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(_, port)| port.parse::<u16>().ok());
        if port.is_none_or(|port| port == 0) {
            return Err(format!("{node:?} is not host:port"));
        }
    }
    Ok(ClusterNodes(nodes))
}

fn database_url(text: &str) -> Result<String, String> {
    crate::store::db::Backend::of_url(text)
        .map(|_| text.to_string())
        .ok_or_else(|| "must start with sqlite: or postgres:// (postgresql://)".to_string())
}

fn long_enough(text: &str) -> Result<(), String> {
    if text.len() < MIN_SECRET_LEN {
        return Err(format!("must be at least {MIN_SECRET_LEN} bytes"));
    }
    Ok(())
}

fn token_secret(text: &str) -> Result<TokenSecret, String> {
    long_enough(text)?;
    Ok(TokenSecret::new(text).expect("checked non-empty"))
}

fn admin_token(text: &str) -> Result<String, String> {
    long_enough(text).map(|_| text.to_string())
}

fn flag(text: &str) -> Result<bool, String> {
    match text.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("must be 1 or 0, not {other:?}")),
    }
}

fn key_prefix(text: &str) -> Result<RedisKeys, String> {
    RedisKeys::new(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings as `VAR=value` pairs, passed as flags.
    fn config(vars: &[(&str, &str)]) -> Result<Config, CliError> {
        let mut all = vec![
            ("SECKILL_TOKEN_SECRET", "0123456789abcdef0123"),
            ("SECKILL_ADMIN_TOKEN", "admin-token-0123456789"),
        ];
        all.retain(|(k, _)| !vars.iter().any(|(var, _)| var == k));
        all.extend_from_slice(vars);
        Cli::from_vars(all).map(|cli| cli.config)
    }

    fn config_error(vars: &[(&str, &str)]) -> ConfigError {
        match config(vars) {
            Err(CliError::Config(err)) => err,
            Err(CliError::Clap(err)) => panic!("{vars:?}: not a config error: {err}"),
            Ok(_) => panic!("{vars:?} was accepted"),
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert!(c.database_url.starts_with("sqlite:"));
        assert_eq!(c.pay_timeout(), Duration::from_secs(1200));
        assert!(!c.demo_login);
        assert_eq!(c.mode, BuyMode::Reserve);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn errors_name_the_variable() {
        for (vars, var) in [
            (
                vec![("SECKILL_TOKEN_SECRET", "short")],
                "SECKILL_TOKEN_SECRET",
            ),
            (vec![("SECKILL_BIND", "nowhere")], "SECKILL_BIND"),
            (vec![("REDIS_URL", "http://x")], "REDIS_URL"),
            (vec![("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (
                vec![("SECKILL_PAY_TIMEOUT_S", "soon")],
                "SECKILL_PAY_TIMEOUT_S",
            ),
            (
                vec![("SECKILL_PAY_TIMEOUT_S", "0")],
                "SECKILL_PAY_TIMEOUT_S",
            ),
            (vec![("SECKILL_DEMO_LOGIN", "maybe")], "SECKILL_DEMO_LOGIN"),
            (vec![("SECKILL_KEY_PREFIX", "a{b}")], "SECKILL_KEY_PREFIX"),
            (vec![("SECKILL_MODE", "fast")], "SECKILL_MODE"),
            (vec![("SECKILL_LOG_FORMAT", "xml")], "SECKILL_LOG_FORMAT"),
            (
                vec![("REDIS_CLUSTER_NODES", "127.0.0.1")],
                "REDIS_CLUSTER_NODES",
            ),
            (vec![("REDIS_CLUSTER_NODES", ",")], "REDIS_CLUSTER_NODES"),
            (
                vec![("REDIS_CLUSTER_NODES", "a:1,b:x")],
                "REDIS_CLUSTER_NODES",
            ),
        ] {
            let err = config_error(&vars);
            assert_eq!(err.var, var, "{vars:?}");
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn a_missing_secret_is_named() {
        let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["seckill-origin", "--admin-token=admin-token-0123456789"]);
        match Cli::from_matches(matches) {
            Err(CliError::Config(err)) => assert_eq!(err.var, "SECKILL_TOKEN_SECRET"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_are_read() {
        let c = config(&[
            ("SECKILL_DEMO_LOGIN", "1"),
            ("SECKILL_PAY_TIMEOUT_S", "2"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            ("SECKILL_KEY_PREFIX", "t1:"),
            ("SECKILL_CANCEL_POLL_MS", "0"),
            ("SECKILL_LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert!(c.demo_login);
        assert_eq!(c.pay_timeout(), Duration::from_secs(2));
        assert_eq!(c.keys().prefix(), "t1:");
        assert_eq!(c.cancel_poll(), None);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.redis_target(),
            RedisTarget::Single("redis://127.0.0.1:6379".into())
        );
        let c = config(&[("REDIS_CLUSTER_NODES", "10.0.0.1:7000, 10.0.0.2:7001")]).unwrap();
        assert_eq!(
            c.redis_target(),
            RedisTarget::Cluster(vec!["10.0.0.1:7000".into(), "10.0.0.2:7001".into()])
        );
    }

    /// The README's configuration table, row by row, must be exactly what
    /// the declarations above say: one source for variables, defaults and
    /// meanings.
    #[test]
    fn the_readme_table_matches_the_declaration() {
        let expected: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|arg| {
                let var = arg.get_env()?.to_string_lossy().into_owned();
                let default = match arg.get_default_values() {
                    [] if arg.is_required_set() => "required".to_string(),
                    [] => "unset".to_string(),
                    values => format!("`{}`", values[0].to_string_lossy()),
                };
                let meaning = arg.get_help()?.to_string();
                Some(format!("| `{var}` | {default} | {meaning} |"))
            })
            .collect();
        let readme = include_str!("../../README.md");
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|line| !line.starts_with("| variable | default | meaning |"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .collect();
        assert_eq!(
            table,
            expected,
            "the README's configuration table must read:\n{}",
            expected.join("\n")
        );
    }
}
