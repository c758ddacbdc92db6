//! The flash sale `scripts/run` shows: ten "Demo phone"s that open a minute
//! from now on the origin's clock, for an hour. The product id is kept in a
//! file, and a previous run's sale is reused only while its countdown is
//! still running, so every run shows the countdown, the opening and the
//! rush.

use std::path::Path;

use anyhow::{bail, Context};
use seckill_shared::api::CreateProduct;
use seckill_shared::ProductId;

use crate::scenario::{clock_offset_ms, unix_ms};

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
    let api = seckill_client::Client::new(base)?.with_admin_token(admin_token);
    let (offset_ms, _) = clock_offset_ms(&api).await?;
    let now = (unix_ms() + offset_ms) / 1_000;
    let remembered = std::fs::read_to_string(remember)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .and_then(|id| ProductId::new(id).ok());
    if let Some(product_id) = remembered {
        // Gone or unreadable: a new sale is made instead.
        if let Ok(product) = api.product(product_id).await {
            if product.starts_at > now {
                return Ok(DemoSale {
                    product_id: product_id.get(),
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
    let product = match api.create_sale(&body).await {
        Ok(product) => product,
        Err(err @ seckill_client::Error::Api { .. }) => {
            bail!("creating the demo sale was answered {err}: check SECKILL_ADMIN_TOKEN")
        }
        Err(err) => return Err(err.into()),
    };
    let product_id = product.product_id.get();
    std::fs::write(remember, format!("{product_id}\n"))
        .with_context(|| format!("writing {}", remember.display()))?;
    Ok(DemoSale {
        product_id,
        starts_at: product.starts_at,
        reused: false,
    })
}
