//! The edge's configuration, from the Worker's variables (`wrangler.toml`
//! `[vars]`, `--var`, or the dashboard) and its secret.

use std::time::Duration;

use seckill_shared::rate_limit::RateLimit;

use crate::gate::{GateSettings, QueueSettings};
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
    /// Unresolved buys the admission gate allows per unit left; 0 = no gate.
    pub gate_overbook: f64,
    /// While the gate believes nothing is left, how often it reads again.
    pub gate_reread: Duration,
    /// How long an isolate's lease of admissions lasts.
    pub gate_lease: Duration,
    /// Objects each product's gate is sharded over.
    pub gate_shards: u32,
    /// Where the per-member rate limit is kept.
    pub member_limits: MemberLimits,
}

/// Where a member's buys are counted against the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberLimits {
    /// In the product's admission gate, across every isolate (each isolate
    /// still limits on its own first).
    Gate,
    /// Only in each isolate: a member spread over isolates gets the limit
    /// once per isolate.
    Isolate,
}

/// Everything the edge reads from its environment, by name.
pub const ORIGIN_URL: &str = "ORIGIN_URL";
pub const TOKEN_SECRET: &str = "SECKILL_TOKEN_SECRET";

/// One setting: its variable, its default (as the variable would spell it)
/// and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// The edge's settings and their defaults, declared here once:
/// `wrangler.toml`'s `[vars]` and the table in docs/EDGE.md are checked
/// against this list by the tests below. (The token secret has no default.)
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: ORIGIN_URL,
        default: "http://127.0.0.1:8080",
        meaning: "where everything the edge does not answer itself goes (a hostname in production)",
    },
    Setting {
        name: "SOLDOUT_TTL_MS",
        default: "1500",
        meaning: "how long a sold-out flag is believed without news from the origin",
    },
    Setting {
        name: "SOLDOUT_REFRESH_MS",
        default: "1000",
        meaning: "how often, at most, the sold-out snapshot is taken from the origin",
    },
    Setting {
        name: "PRODUCT_TTL_MS",
        default: "1000",
        meaning: "how long a product read is served from the edge's copy",
    },
    Setting {
        name: "PRODUCT_STALE_MS",
        default: "30000",
        meaning: "how old a copy may be and still be served while the origin cannot be reached",
    },
    Setting {
        name: "ORIGIN_TIMEOUT_MS",
        default: "3000",
        meaning: "the deadline of every call to the origin",
    },
    Setting {
        name: "RATE_LIMIT_BURST",
        default: "5",
        meaning: "buys a member may make in a burst",
    },
    Setting {
        name: "RATE_LIMIT_PER_S",
        default: "2",
        meaning: "buys per second refilled after the burst",
    },
    Setting {
        name: "MEMBER_LIMITS",
        default: "gate",
        meaning: "`gate`: the rate limit holds across isolates, kept by the admission gate; `isolate`: per isolate only (also when the gate is off)",
    },
    Setting {
        name: "GATE_OVERBOOK",
        default: "2",
        meaning: "buys the admission gate lets wait on the origin per unit of stock left; `0` turns the gate off",
    },
    Setting {
        name: "GATE_REREAD_MS",
        default: "500",
        meaning: "while the gate believes nothing is left, how often it reads the stock again (returned stock reopens it within this)",
    },
    Setting {
        name: "GATE_LEASE_MS",
        default: "200",
        meaning: "how long an isolate's lease of admissions lasts: it admits buyers from it without asking the gate, and reports and renews it once per lease",
    },
    Setting {
        name: "GATE_SHARDS",
        default: "1",
        meaning: "objects each product's gate is spread over (1 to 64): isolates call a shard picked by their id, and shards lease from the product's root object the same way (for more than one object's ~1,000 calls a second)",
    },
];

/// The declared default of `name`.
pub fn default_of(name: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|setting| setting.name == name)
        .map(|setting| setting.default)
        .unwrap_or_else(|| panic!("{name} is not a declared setting"))
}

/// The variable's value, or its declared default.
fn value(get: &impl Fn(&str) -> Option<String>, name: &str) -> String {
    get(name).unwrap_or_else(|| default_of(name).to_string())
}

fn millis(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Duration, String> {
    let text = value(get, name);
    text.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{name}: not a whole number of milliseconds: {text:?}"))
}

fn number(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<f64, String> {
    let text = value(get, name);
    match text.trim().parse::<f64>() {
        Ok(value) if value > 0.0 && value.is_finite() => Ok(value),
        _ => Err(format!("{name}: not a positive number: {text:?}")),
    }
}

impl EdgeConfig {
    /// Reads every setting through `get`; a malformed value is an error
    /// naming the variable.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        let origin_url = value(&get, ORIGIN_URL).trim_end_matches('/').to_string();
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
            sold_out_ttl: millis(&get, "SOLDOUT_TTL_MS")?,
            sold_out_refresh: millis(&get, "SOLDOUT_REFRESH_MS")?,
            product_ttl: millis(&get, "PRODUCT_TTL_MS")?,
            product_stale: millis(&get, "PRODUCT_STALE_MS")?,
            origin_timeout: millis(&get, "ORIGIN_TIMEOUT_MS")?,
            rate_limit: RateLimit {
                burst: number(&get, "RATE_LIMIT_BURST")? as u32,
                per_second: number(&get, "RATE_LIMIT_PER_S")?,
            },
            gate_overbook: overbook(&get)?,
            gate_reread: millis(&get, "GATE_REREAD_MS")?,
            gate_lease: match millis(&get, "GATE_LEASE_MS")? {
                lease if (1..=10_000).contains(&lease.as_millis()) => lease,
                _ => return Err("GATE_LEASE_MS: from 1 to 10000".to_string()),
            },
            gate_shards: match value(&get, "GATE_SHARDS").trim().parse::<u32>() {
                Ok(shards) if (1..=crate::gate::MAX_SHARDS).contains(&shards) => shards,
                _ => return Err("GATE_SHARDS: a whole number from 1 to 64".to_string()),
            },
            member_limits: match value(&get, "MEMBER_LIMITS").trim() {
                "gate" => MemberLimits::Gate,
                "isolate" => MemberLimits::Isolate,
                other => return Err(format!("MEMBER_LIMITS: `gate` or `isolate`, not {other:?}")),
            },
        })
    }

    /// How the product's gate object keeps its book.
    pub fn gate_settings(&self) -> GateSettings {
        GateSettings {
            overbook: self.gate_overbook,
            reread_ms: self.gate_reread.as_millis() as u64,
            correct_ms: 5_000,
            // Past this every buy the isolate forwarded has been answered
            // or has timed out.
            holder_timeout_ms: self.origin_timeout.as_millis() as u64 + 5_000,
            lease_ms: self.gate_lease.as_millis() as u64,
            member_limit: (self.member_limits == MemberLimits::Gate).then_some(self.rate_limit),
        }
    }

    /// How an isolate keeps its lease: with the member limit in the gate, a
    /// member seen in the last token's time (`1 / RATE_LIMIT_PER_S`) is
    /// decided by the object, not from the lease.
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            lease_ms: self.gate_lease.as_millis() as u64,
            check_members: self.member_limits == MemberLimits::Gate,
            recheck_ms: (1_000.0 / self.rate_limit.per_second).ceil() as u64,
            shards: self.gate_shards,
        }
    }
}

fn overbook(get: &impl Fn(&str) -> Option<String>) -> Result<f64, String> {
    let text = value(get, "GATE_OVERBOOK");
    match text.trim().parse::<f64>() {
        Ok(value) if value == 0.0 || (1.0..=100.0).contains(&value) => Ok(value),
        _ => Err(format!(
            "GATE_OVERBOOK: 0 (off) or a number from 1 to 100: {text:?}"
        )),
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

    /// `NAME = "value"` lines of the `[vars]` table of the repository's
    /// wrangler.toml.
    fn wrangler_vars() -> Vec<(String, String)> {
        let text = include_str!("../../wrangler.toml");
        let mut in_vars = false;
        let mut vars = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_vars = line == "[vars]";
            } else if in_vars && !line.starts_with('#') {
                if let Some((name, value)) = line.split_once('=') {
                    let value = value.trim().trim_matches('"').to_string();
                    vars.push((name.trim().to_string(), value));
                }
            }
        }
        vars
    }

    #[test]
    fn wrangler_toml_sets_the_declared_defaults() {
        let vars = wrangler_vars();
        for (name, value) in &vars {
            assert_eq!(
                value,
                default_of(name),
                "wrangler.toml sets {name} to something other than its default in edge/src/config.rs"
            );
        }
        for setting in SETTINGS {
            assert!(
                vars.iter().any(|(name, _)| name == setting.name),
                "wrangler.toml's [vars] lacks {} = \"{}\"",
                setting.name,
                setting.default
            );
        }
    }

    #[test]
    fn docs_list_every_setting_with_its_default() {
        let docs = include_str!("../../docs/EDGE.md");
        for setting in SETTINGS {
            let row = format!(
                "| `{}` | `{}` | {} |",
                setting.name, setting.default, setting.meaning
            );
            assert!(
                docs.lines().any(|line| line.trim() == row),
                "docs/EDGE.md's settings table lacks this row:\n{row}"
            );
        }
        let rows = docs
            .lines()
            .filter(|line| line.starts_with("| `") && line.contains("` | `"))
            .count();
        assert_eq!(
            rows,
            SETTINGS.len(),
            "docs/EDGE.md lists settings the edge does not have"
        );
    }

    #[test]
    fn trailing_slash_is_dropped() {
        let c = config(&[(TOKEN_SECRET, "s"), (ORIGIN_URL, "https://origin.example/")]).unwrap();
        assert_eq!(c.origin_url, "https://origin.example");
    }
}
