//! Configuration from the environment, validated once at start-up.
//!
//! Every variable of `API.md` is read here and nowhere else. A missing secret
//! or a malformed value stops start-up with an error naming the variable, so
//! a typo in a deployment fails loudly instead of running with a default.

use std::net::SocketAddr;
use std::time::Duration;

use seckill_shared::keys::RedisKeys;
use seckill_shared::rate_limit::RateLimit;
use seckill_shared::token::TokenSecret;

/// Shortest secret or admin token accepted: anything shorter is guessable.
const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

/// How the buy path is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyMode {
    /// Stock reserved in Redis, orders written asynchronously (the design).
    Reserve,
    /// Every buy is one database transaction: the naive baseline the
    /// benchmarks compare against.
    SyncDb,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub redis_url: String,
    pub database_url: String,
    pub token_secret: TokenSecret,
    pub admin_token: String,
    pub demo_login: bool,
    pub pay_timeout: Duration,
    pub keys: RedisKeys,
    pub buy_mode: BuyMode,
    /// How long a local sold-out flag is trusted before Redis is asked again.
    pub sold_out_flag_ttl: Duration,
    /// Per-member limit on buy requests, per origin process.
    pub rate_limit: RateLimit,
    /// Lifetime of tokens minted by the demo login.
    pub session_ttl: Duration,
    /// How long product reads are served from memory.
    pub product_cache_ttl: Duration,
    pub db_max_connections: u32,
    /// Order-writing consumers run inside this process (0: none, run them
    /// with `seckill-origin worker` instead).
    pub consumers: usize,
    /// Orders read from the stream per consumer batch.
    pub consumer_batch: usize,
    /// A pending order request idle this long is taken over from its consumer.
    pub claim_idle: Duration,
    /// Deliveries after which an order request goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// How long acknowledged order requests stay in the stream (for
    /// inspection and replays) before they are trimmed.
    pub stream_retention: Duration,
    /// How often this process looks for due payment deadlines (`None`: it
    /// does not; other processes do).
    pub cancel_poll: Option<Duration>,
    /// How long a claimed deadline is reserved for the poller that claimed it.
    pub cancel_lease: Duration,
    /// How often the change relay polls the change log (on PostgreSQL it
    /// also wakes on NOTIFY); `None`: this process neither relays nor
    /// applies catalogue changes (other origins do).
    pub cdc_poll: Option<Duration>,
    /// How often reconciliation runs (`None`: only on demand).
    pub reconcile_interval: Option<Duration>,
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://seckill.db?mode=rwc";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let bind = parse_or(&get, "SECKILL_BIND", "127.0.0.1:8080".parse().unwrap())?;
        let redis_url = get("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        if redis::Client::open(redis_url.as_str()).is_err() {
            return Err(ConfigError::new("REDIS_URL", "not a valid redis:// URL"));
        }
        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        if crate::db::Backend::of_url(&database_url).is_none() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with sqlite: or postgres:// (postgresql://)",
            ));
        }

        let secret = get("SECKILL_TOKEN_SECRET").ok_or_else(|| {
            ConfigError::new(
                "SECKILL_TOKEN_SECRET",
                "is required (the HMAC key of member tokens)",
            )
        })?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(
                "SECKILL_TOKEN_SECRET",
                format!("must be at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        let token_secret = TokenSecret::new(secret).expect("checked non-empty");
        let admin_token = get("SECKILL_ADMIN_TOKEN").ok_or_else(|| {
            ConfigError::new(
                "SECKILL_ADMIN_TOKEN",
                "is required (the bearer token of /admin)",
            )
        })?;
        if admin_token.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(
                "SECKILL_ADMIN_TOKEN",
                format!("must be at least {MIN_SECRET_LEN} bytes"),
            ));
        }

        let demo_login = parse_bool(&get, "SECKILL_DEMO_LOGIN", false)?;
        let pay_timeout = Duration::from_secs(parse_range(
            &get,
            "SECKILL_PAY_TIMEOUT_S",
            1200,
            1..=7 * 86_400,
        )?);
        let prefix = get("SECKILL_KEY_PREFIX").unwrap_or_else(|| "seckill:".into());
        let keys = RedisKeys::new(prefix)
            .map_err(|e| ConfigError::new("SECKILL_KEY_PREFIX", e.to_string()))?;
        let buy_mode = match get("SECKILL_MODE").as_deref() {
            None | Some("reserve") => BuyMode::Reserve,
            Some("sync-db") => BuyMode::SyncDb,
            Some(_) => {
                return Err(ConfigError::new(
                    "SECKILL_MODE",
                    "must be reserve or sync-db",
                ))
            }
        };

        Ok(Self {
            bind,
            redis_url,
            database_url,
            token_secret,
            admin_token,
            demo_login,
            pay_timeout,
            keys,
            buy_mode,
            sold_out_flag_ttl: Duration::from_millis(parse_range(
                &get,
                "SECKILL_SOLDOUT_TTL_MS",
                5_000,
                1..=3_600_000,
            )?),
            rate_limit: RateLimit {
                burst: parse_range(&get, "SECKILL_RATE_LIMIT_BURST", 5, 1..=1_000_000)? as u32,
                per_second: parse_range(&get, "SECKILL_RATE_LIMIT_PER_S", 2, 1..=1_000_000)? as f64,
            },
            session_ttl: Duration::from_secs(parse_range(
                &get,
                "SECKILL_SESSION_TTL_S",
                86_400,
                1..=30 * 86_400,
            )?),
            product_cache_ttl: Duration::from_millis(parse_range(
                &get,
                "SECKILL_PRODUCT_CACHE_MS",
                250,
                0..=60_000,
            )?),
            db_max_connections: parse_range(&get, "SECKILL_DB_MAX_CONNECTIONS", 8, 1..=1_000)?
                as u32,
            consumers: parse_range(&get, "SECKILL_CONSUMERS", 1, 0..=64)? as usize,
            consumer_batch: parse_range(&get, "SECKILL_CONSUMER_BATCH", 200, 1..=5_000)? as usize,
            claim_idle: Duration::from_millis(parse_range(
                &get,
                "SECKILL_CLAIM_IDLE_MS",
                30_000,
                100..=86_400_000,
            )?),
            max_deliveries: parse_range(&get, "SECKILL_MAX_DELIVERIES", 5, 1..=1_000)?,
            stream_retention: Duration::from_millis(parse_range(
                &get,
                "SECKILL_STREAM_RETENTION_MS",
                60_000,
                0..=86_400_000,
            )?),
            cancel_poll: match parse_range(&get, "SECKILL_CANCEL_POLL_MS", 200, 0..=60_000)? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            cancel_lease: Duration::from_millis(parse_range(
                &get,
                "SECKILL_CANCEL_LEASE_MS",
                30_000,
                100..=3_600_000,
            )?),
            cdc_poll: match parse_range(&get, "SECKILL_CDC_POLL_MS", 500, 0..=60_000)? {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            reconcile_interval: match parse_range(
                &get,
                "SECKILL_RECONCILE_INTERVAL_S",
                30,
                0..=86_400,
            )? {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
        })
    }
}

fn parse_or<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(var, format!("cannot parse {text:?}"))),
    }
}

fn parse_range(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let value = parse_or(get, var, default)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            var,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

fn parse_bool(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(var).as_deref().map(str::trim) {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::new(
            var,
            format!("must be 1 or 0, not {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = [
            ("SECKILL_TOKEN_SECRET", "0123456789abcdef0123"),
            ("SECKILL_ADMIN_TOKEN", "admin-token-0123456789"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in vars {
            map.insert(k.to_string(), v.to_string());
        }
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert!(c.database_url.starts_with("sqlite:"));
        assert_eq!(c.pay_timeout, Duration::from_secs(1200));
        assert!(!c.demo_login);
        assert_eq!(c.buy_mode, BuyMode::Reserve);
    }

    #[test]
    fn errors_name_the_variable() {
        for (vars, var) in [
            (vec![("SECKILL_TOKEN_SECRET", "")], "SECKILL_TOKEN_SECRET"),
            (
                vec![("SECKILL_TOKEN_SECRET", "short")],
                "SECKILL_TOKEN_SECRET",
            ),
            (vec![("SECKILL_ADMIN_TOKEN", "")], "SECKILL_ADMIN_TOKEN"),
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
        ] {
            let err = config(&vars).unwrap_err();
            assert_eq!(err.var, var, "{vars:?}");
            assert!(err.to_string().starts_with(var));
        }
    }

    #[test]
    fn values_are_read() {
        let c = config(&[
            ("SECKILL_DEMO_LOGIN", "1"),
            ("SECKILL_PAY_TIMEOUT_S", "2"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            ("SECKILL_KEY_PREFIX", "t1:"),
        ])
        .unwrap();
        assert!(c.demo_login);
        assert_eq!(c.pay_timeout, Duration::from_secs(2));
        assert_eq!(c.keys.prefix(), "t1:");
    }
}
