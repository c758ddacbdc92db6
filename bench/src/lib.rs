//! The pieces of `seckill-bench` that the end-to-end tests use too, so a
//! fault is injected, a metric read and a port found the same way by a
//! test, the chaos soak and the scripts, and the invariants are checked by
//! one audit.

pub mod audit;
pub mod metrics_text;
pub mod proxy;

/// A free TCP port on 127.0.0.1 (released before it is returned, so a
/// process started right after can bind it).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
}

/// A free port whose Redis Cluster bus port (port + 10000) is free too,
/// and not one of `taken`.
pub fn free_cluster_port(taken: &[u16]) -> std::io::Result<u16> {
    loop {
        let port = free_port()?;
        if port > 55_000 || taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
}
