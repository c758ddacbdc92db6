//! What the handlers share: the services they call and the secrets they
//! check. Built once by `startup`; cloning it is cloning one `Arc`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use seckill_shared::token::TokenSecret;

use crate::metrics::Metrics;
use crate::services::buy::Buying;
use crate::services::catalog::Catalog;
use crate::services::lifecycle::Lifecycle;
use crate::services::operations::Operations;
use crate::services::reconcile::Reconciler;
use crate::services::sales::Sales;
use crate::services::sold_out::SoldOut;

/// Who may call what: the member token key and the admin token.
pub struct Auth {
    pub token_secret: TokenSecret,
    pub admin_token: String,
    /// Lifetime of tokens the demo login mints; `None`: no demo login.
    pub demo_sessions: Option<Duration>,
}

pub struct Services {
    pub auth: Auth,
    pub buying: Buying,
    pub catalog: Arc<Catalog>,
    pub sold_out: Arc<SoldOut>,
    pub sales: Sales,
    pub lifecycle: Lifecycle,
    pub reconciler: Arc<Reconciler>,
    pub operations: Operations,
    pub metrics: Arc<Metrics>,
}

#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}
