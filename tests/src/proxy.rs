//! The TCP proxy tests cut, restore or delay; the chaos soak uses the same.

pub use seckill_bench::proxy::TcpProxy;
