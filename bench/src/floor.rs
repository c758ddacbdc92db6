//! The HTTP floor: a server that answers every request at once with the
//! origin's sold-out answer (`409`, the contract's `sold_out` body) and does
//! nothing else — no routing, no token check, no state.
//!
//! It exists to measure what HTTP alone costs on a machine: the generator
//! against this server is the fastest any origin built on the same HTTP
//! stack could answer, so the sold-out tail and the buy path can be read
//! against it. It is an instrument of the benchmark, never a stand-in for
//! the origin in a test.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use seckill_shared::api::ErrorBody;
use seckill_shared::ErrorCode;
use tokio::net::TcpListener;

/// Serves until the process is stopped. Prints `listening on http://ADDR`
/// once it accepts connections.
pub async fn serve(bind: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    println!(
        "seckill-bench floor listening on http://{}",
        listener.local_addr()?
    );
    let body = Bytes::from(serde_json::to_vec(&ErrorBody {
        error: ErrorCode::SoldOut,
        message: ErrorCode::SoldOut.default_message().to_string(),
    })?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: the next accept may work.
            Err(_) => continue,
        };
        stream.set_nodelay(true)?;
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let mut response = Response::new(Full::new(body.clone()));
                *response.status_mut() = StatusCode::CONFLICT;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            // A client that goes away mid-request is not the floor's concern.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
