//! Requests to the origin, each with a deadline.
//!
//! A Worker's `fetch` has no timeout of its own; an origin that stops
//! answering would hold every buy open. Each call races the fetch against
//! a timer and aborts the fetch when the timer wins.

use std::time::Duration;

use futures_util::future::{select, Either};
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit, Response};

/// The origin could not be asked or did not answer in time.
#[derive(Debug)]
pub enum OriginDown {
    /// Nothing was carried out: the connection was refused, or the request
    /// could not be built, or a read's answer could not be used.
    Unreachable(String),
    /// The connection broke after the request may have gone out: the origin
    /// may have carried it out.
    Lost(String),
    /// The request went out and nothing came back within the deadline: the
    /// origin may have carried it out.
    TimedOut,
}

impl OriginDown {
    /// True when the origin may have carried the request out, so a buy's
    /// outcome is unknown rather than "nothing was reserved".
    pub fn may_have_happened(&self) -> bool {
        matches!(self, Self::Lost(_) | Self::TimedOut)
    }
}

/// Classifies a failed fetch by workerd's message: only a connection that
/// was never made proves the request was not sent.
pub fn fetch_failure(message: String) -> OriginDown {
    let lower = message.to_ascii_lowercase();
    let never_connected = [
        "connection refused",
        "connect()",
        "econnrefused",
        "dns lookup",
    ]
    .iter()
    .any(|sign| lower.contains(sign));
    if never_connected {
        OriginDown::Unreachable(message)
    } else {
        OriginDown::Lost(message)
    }
}

pub struct OriginClient<'a> {
    pub base: &'a str,
    pub timeout: Duration,
}

impl OriginClient<'_> {
    /// Sends one request to `path_and_query` on the origin.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: Headers,
        body: Option<Vec<u8>>,
    ) -> Result<Response, OriginDown> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(body) = body {
            init.with_body(Some(
                worker::js_sys::Uint8Array::from(body.as_slice()).into(),
            ));
        }
        let request = Request::new_with_init(&url, &init)
            .map_err(|e| OriginDown::Unreachable(e.to_string()))?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let fetch = Fetch::Request(request);
        let call = std::pin::pin!(fetch.send_with_signal(&signal));
        let timer = std::pin::pin!(Delay::from(self.timeout));
        match select(call, timer).await {
            Either::Left((Ok(response), _)) => Ok(response),
            Either::Left((Err(err), _)) => Err(fetch_failure(err.to_string())),
            Either::Right(_) => {
                controller.abort();
                Err(OriginDown::TimedOut)
            }
        }
    }

    pub async fn get(&self, path: &str, headers: Headers) -> Result<Response, OriginDown> {
        self.send(Method::Get, path, headers, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connection_never_made_proves_nothing_was_sent() {
        for refused in [
            "TypeError: Fetch failed: connect(): Connection refused",
            "Error: ECONNREFUSED 127.0.0.1:9",
        ] {
            assert!(
                !fetch_failure(refused.into()).may_have_happened(),
                "{refused}"
            );
        }
        for lost in ["Error: Network connection lost.", "internal error"] {
            assert!(fetch_failure(lost.into()).may_have_happened(), "{lost}");
        }
        assert!(OriginDown::TimedOut.may_have_happened());
    }
}
