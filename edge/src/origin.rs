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
    /// No usable answer (refused, reset, or an answer the edge could not
    /// read).
    Unreachable(String),
    /// The request went out and nothing came back within the deadline: the
    /// origin may have carried it out.
    TimedOut,
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
            Either::Left((Err(err), _)) => Err(OriginDown::Unreachable(err.to_string())),
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
