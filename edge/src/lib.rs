//! The flash-sale edge: a Cloudflare Worker in Rust, compiled to Wasm.
//!
//! It turns away hopeless traffic before it costs the origin anything:
//! bad tokens (verified with the same `seckill-shared` code the origin
//! uses), malformed paths and ids, buys outside the sale window (from a
//! short-lived copy of the product), members over the rate limit, and buys
//! for products it knows are sold out (flags learnt from the origin's
//! answers and its `/api/soldout` snapshot, expiring after
//! `SOLDOUT_TTL_MS` so returned stock sells again within seconds), and buys
//! beyond the admission gate's budget (about `stock_left × GATE_OVERBOOK`
//! buys waiting on the origin, kept by a Durable Object per product, of
//! which each isolate leases slices so that most buyers need no call). It
//! serves the storefront's pages from the bundle, answers `/api/time`, and
//! forwards everything else with a timeout. Every answer it gives itself
//! carries `x-served-by: edge`.
//!
//! The decisions live in worker-free modules (`config`, `route`, `state`,
//! `decide`, `gate`) tested on the host with `cargo test -p seckill-edge`;
//! `handler`, `admission` and `origin` are the thin Workers glue.

pub mod admission;
pub mod config;
pub mod decide;
pub mod gate;
pub mod handler;
pub mod origin;
pub mod route;
pub mod state;

use seckill_shared::ErrorCode;
use worker::{event, Context, Env, Request, Response, Result};

use crate::config::EdgeConfig;
use crate::decide::Refusal;

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let config = match EdgeConfig::from_vars(|name| handler::variable(&env, name)) {
        Ok(config) => config,
        Err(message) => {
            worker::console_error!("edge misconfigured: {message}");
            return handler::edge_error(&Refusal::with_message(ErrorCode::Internal, message));
        }
    };
    handler::handle(req, &env, &ctx, &config).await
}
