//! Logging: one line per event on stderr, as text for people or as JSON for
//! log shippers (`SECKILL_LOG_FORMAT`), filtered by `RUST_LOG` (default:
//! this service at info, sqlx's per-query lines off). Requests, consumer
//! batches, deadline claims, change steps and reconcile passes each run in
//! a span, so every line says what it belongs to (a request's line carries
//! its `x-request-id`).

use std::error::Error;
use std::fmt;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the span fields.
    Json,
}

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// Displays an error with every cause under it: `a: b: c`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            // Many errors (io, redis) already print their source in their
            // own message; saying it twice only makes the line longer.
            let text = cause.to_string();
            if !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            source = cause.source();
        }
        Ok(())
    }
}

/// Shorthand for logging an error with its causes: `error = %chain(&err)`.
pub fn chain<'a>(err: &'a (dyn Error + 'static)) -> Chain<'a> {
    Chain(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_every_cause() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&err).to_string(), "outer: inner");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("redis: {0}")]
    struct Echoing(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let err = Outer(std::io::Error::other(Echoing(std::io::Error::other(
            "broken pipe",
        ))));
        assert_eq!(chain(&err).to_string(), "outer: redis: broken pipe");
    }
}
