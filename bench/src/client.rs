//! One keep-alive HTTP/1.1 connection per worker.
//!
//! The generator shares the machine with what it measures, so it stays
//! cheap: a connection is opened once and reused for every request of its
//! worker (no pool, no per-request lookups), and reopened only after an
//! error. `https://` targets go through rustls with the webpki roots.

use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Where requests go: scheme, host and port of a base URL.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    authority: HeaderValue,
    tls: Option<(
        TlsConnector,
        tokio_rustls::rustls::pki_types::ServerName<'static>,
    )>,
}

impl Target {
    pub fn parse(base: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = base.parse().with_context(|| format!("not a URL: {base}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("the URL must start with http:// or https://: {base}"),
        };
        let host = uri.host().context("the URL has no host")?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = HeaderValue::from_str(uri.authority().context("no authority")?.as_str())?;
        let tls = if https {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config = ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            authority,
            tls,
        })
    }
}

/// A worker's own connection.
pub struct Connection {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// What the generator keeps of an answer.
pub struct Answer {
    pub status: StatusCode,
    pub served_by_edge: bool,
    pub body: Bytes,
}

impl Connection {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port)).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.target.tls {
            None => {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                sender
            }
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                sender
            }
        })
    }

    /// Sends one request; on a broken connection the next call reconnects.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.open().await?);
        }
        let sender = self.sender.as_mut().expect("opened above");
        sender.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.target.authority.clone());
        if let Some(token) = bearer {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let result = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let served_by_edge = response
                .headers()
                .get("x-served-by")
                .is_some_and(|v| v.as_bytes() == b"edge");
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer {
                status,
                served_by_edge,
                body,
            })
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}
