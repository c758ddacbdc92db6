//! A loopback TCP proxy that a test, the chaos soak or scripts/bench
//! (`seckill-bench proxy`) puts between a process and its Redis, database or
//! origin, to cut the path (every connection
//! dropped, new ones refused) or lengthen it (a delay each way, as a far
//! location has) without touching the server behind it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

pub struct TcpProxy {
    port: u16,
    path: Arc<Path>,
    accept_loop: AbortHandle,
}

/// What the accept loop and every forwarded connection share.
#[derive(Default)]
struct Path {
    cut: AtomicBool,
    delay_us: AtomicU64,
    connections: Mutex<Vec<AbortHandle>>,
}

impl TcpProxy {
    /// Forwards a fresh loopback port to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], target_port));
        Self::bind(listen, target).await.expect("bind proxy")
    }

    /// Forwards `listen` (port 0: a free one) to `target`.
    pub async fn bind(
        listen: std::net::SocketAddr,
        target: std::net::SocketAddr,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let port = listener.local_addr()?.port();
        let path = Arc::new(Path::default());
        let shared = path.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if shared.cut.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let _ = inbound.set_nodelay(true);
                let path = shared.clone();
                let task = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        let _ = outbound.set_nodelay(true);
                        forward(inbound, outbound, path).await;
                    }
                });
                let mut live = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
                live.retain(|task| !task.is_finished());
                live.push(task.abort_handle());
            }
        })
        .abort_handle();
        Ok(Self {
            port,
            path,
            accept_loop,
        })
    }

    /// A proxy that adds `delay` each way from the start.
    pub async fn with_delay(target_port: u16, delay: Duration) -> Self {
        let proxy = Self::start(target_port).await;
        proxy.set_delay(delay);
        proxy
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy as a Redis URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The proxy as an HTTP base URL.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.path.cut.store(true, Ordering::SeqCst);
        let mut live = self
            .path
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for connection in live.drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.path.cut.store(false, Ordering::SeqCst);
    }

    /// Every byte is held this long before it is passed on, in each
    /// direction; bytes keep their order and the path keeps its bandwidth.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.path.delay_us.store(micros, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept_loop.abort();
    }
}

async fn forward(inbound: TcpStream, outbound: TcpStream, path: Arc<Path>) {
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    // Each direction ends on its own (a half-close is passed on), as
    // `copy_bidirectional` does.
    tokio::join!(
        pump(in_read, out_write, path.clone()),
        pump(out_read, in_write, path)
    );
}

/// Copies one direction, each chunk released `delay` after it arrived.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    path: Arc<Path>,
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let delay = Duration::from_micros(path.delay_us.load(Ordering::SeqCst));
                    if chunks
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // The writer drains what was read before the reader saw the end.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        port
    }

    async fn round_trip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
        socket.write_all(b"ping").await?;
        let mut answer = vec![0u8; 4];
        socket.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn delays_each_way_cuts_and_restores() {
        let proxy = TcpProxy::with_delay(echo_server().await, Duration::from_millis(40)).await;
        let started = std::time::Instant::now();
        assert_eq!(round_trip(proxy.port()).await.unwrap(), b"ping");
        assert!(
            started.elapsed() >= Duration::from_millis(80),
            "held each way"
        );

        proxy.set_delay(Duration::ZERO);
        proxy.cut();
        assert!(round_trip(proxy.port()).await.is_err(), "refused while cut");
        proxy.restore();
        assert_eq!(round_trip(proxy.port()).await.unwrap(), b"ping");
    }
}
