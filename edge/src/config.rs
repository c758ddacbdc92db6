//! The edge's configuration, from the Worker's variables (`wrangler.toml`
//! `[vars]`, `--var`, or the dashboard) and its secret.

use std::time::Duration;

use seckill_shared::rate_limit::RateLimit;
use seckill_shared::token::TokenSecret;

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where everything the edge does not answer itself goes. Production
    /// Workers cannot fetch an IP address, so there this is a hostname.
    pub origin_url: String,
    pub token_secret: TokenSecret,
    /// How long a sold-out flag is believed without news from the origin.
    pub sold_out_ttl: Duration,
    /// How often, at most, the sold-out snapshot is fetched from the origin.
    pub sold_out_refresh: Duration,
    /// How long a product read is served from the edge's copy.
    pub product_ttl: Duration,
    /// How old a copy may be and still be served when the origin is down.
    pub product_stale: Duration,
    pub origin_timeout: Duration,
    pub rate_limit: RateLimit,
}

/// Everything the edge reads from its environment, by name.
pub const ORIGIN_URL: &str = "ORIGIN_URL";
pub const TOKEN_SECRET: &str = "SECKILL_TOKEN_SECRET";

fn millis(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
) -> Result<Duration, String> {
    match get(name) {
        None => Ok(Duration::from_millis(default)),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{name}: not a whole number of milliseconds: {text:?}")),
    }
}

fn number(get: &impl Fn(&str) -> Option<String>, name: &str, default: f64) -> Result<f64, String> {
    match get(name) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<f64>() {
            Ok(value) if value > 0.0 => Ok(value),
            _ => Err(format!("{name}: not a positive number: {text:?}")),
        },
    }
}

impl EdgeConfig {
    /// Reads every setting through `get`; a malformed value is an error
    /// naming the variable.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        let origin_url = get(ORIGIN_URL)
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_string();
        if !(origin_url.starts_with("http://") || origin_url.starts_with("https://")) {
            return Err(format!("{ORIGIN_URL}: must start with http:// or https://"));
        }
        let secret = get(TOKEN_SECRET)
            .ok_or_else(|| format!("{TOKEN_SECRET}: the token secret is not set"))?;
        let token_secret =
            TokenSecret::new(secret).ok_or_else(|| format!("{TOKEN_SECRET}: empty"))?;
        Ok(Self {
            origin_url,
            token_secret,
            sold_out_ttl: millis(&get, "SOLDOUT_TTL_MS", 1_500)?,
            sold_out_refresh: millis(&get, "SOLDOUT_REFRESH_MS", 1_000)?,
            product_ttl: millis(&get, "PRODUCT_TTL_MS", 1_000)?,
            product_stale: millis(&get, "PRODUCT_STALE_MS", 30_000)?,
            origin_timeout: millis(&get, "ORIGIN_TIMEOUT_MS", 3_000)?,
            rate_limit: RateLimit {
                burst: number(&get, "RATE_LIMIT_BURST", 5.0)? as u32,
                per_second: number(&get, "RATE_LIMIT_PER_S", 2.0)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<EdgeConfig, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EdgeConfig::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[(TOKEN_SECRET, "s3cret")]).unwrap();
        assert_eq!(c.origin_url, "http://127.0.0.1:8080");
        assert_eq!(c.sold_out_ttl, Duration::from_millis(1_500));
        assert_eq!(c.rate_limit.burst, 5);
    }

    #[test]
    fn errors_name_the_variable() {
        assert!(config(&[]).unwrap_err().starts_with(TOKEN_SECRET));
        let err = config(&[(TOKEN_SECRET, "s"), ("SOLDOUT_TTL_MS", "soon")]).unwrap_err();
        assert!(err.starts_with("SOLDOUT_TTL_MS"));
        let err = config(&[(TOKEN_SECRET, "s"), (ORIGIN_URL, "ftp://x")]).unwrap_err();
        assert!(err.starts_with(ORIGIN_URL));
        assert!(config(&[(TOKEN_SECRET, "s"), ("RATE_LIMIT_PER_S", "0")]).is_err());
    }

    #[test]
    fn trailing_slash_is_dropped() {
        let c = config(&[(TOKEN_SECRET, "s"), (ORIGIN_URL, "https://origin.example/")]).unwrap();
        assert_eq!(c.origin_url, "https://origin.example");
    }
}
