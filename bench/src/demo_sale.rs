//! The flash sale `scripts/run` shows: ten "Demo phone"s that open a minute
//! from now on the origin's clock, for an hour. The product id is kept in a
//! file, and a previous run's sale is reused only while its countdown is
//! still running, so every run shows the countdown, the opening and the
//! rush.

use std::path::Path;

use anyhow::{bail, Context};
use http::Method;
use seckill_shared::api::{CreateProduct, ProductView};

use crate::client::Target;
use crate::scenario::{call_json, clock_offset_ms, unix_ms};

const COUNTDOWN_S: i64 = 60;
const LASTS_S: i64 = 3_600;

/// The demo sale's product, and whether it was a previous run's.
pub struct DemoSale {
    pub product_id: i64,
    pub starts_at: i64,
    pub reused: bool,
}

/// The remembered sale if its countdown still runs, else a new one
/// (remembered in `remember` from then on).
pub async fn create_or_reuse(
    base: &str,
    admin_token: &str,
    remember: &Path,
) -> anyhow::Result<DemoSale> {
    let target = Target::parse(base)?;
    let (offset_ms, _) = clock_offset_ms(&target).await?;
    let now = (unix_ms() + offset_ms) / 1_000;
    let remembered = std::fs::read_to_string(remember)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok());
    if let Some(product_id) = remembered {
        let (status, product): (u16, Option<ProductView>) = call_json(
            &target,
            Method::GET,
            &format!("/api/products/{product_id}"),
            None,
            None,
        )
        .await?;
        if let (200, Some(product)) = (status, product) {
            if product.starts_at > now {
                return Ok(DemoSale {
                    product_id,
                    starts_at: product.starts_at,
                    reused: true,
                });
            }
        }
    }
    let body = CreateProduct {
        name: "Demo phone".into(),
        price_cents: 99_900,
        flash_price_cents: 9_900,
        stock: 10,
        starts_at: now + COUNTDOWN_S,
        ends_at: now + COUNTDOWN_S + LASTS_S,
    };
    let (status, product): (u16, Option<ProductView>) = call_json(
        &target,
        Method::POST,
        "/admin/products",
        Some(admin_token),
        Some(serde_json::to_vec(&body)?.into()),
    )
    .await?;
    if status != 201 {
        bail!("creating the demo sale was answered {status}: check SECKILL_ADMIN_TOKEN");
    }
    let product = product.context("no product in the answer")?;
    let product_id = product.product_id.get();
    std::fs::write(remember, format!("{product_id}\n"))
        .with_context(|| format!("writing {}", remember.display()))?;
    Ok(DemoSale {
        product_id,
        starts_at: product.starts_at,
        reused: false,
    })
}
