//! Which of the contract's routes a request is for, decided from its method
//! and path alone, so malformed paths and ids are answered at the edge.

use seckill_shared::{OrderId, ProductId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Buy(ProductId),
    Result(ProductId),
    Product(ProductId),
    SoldOut,
    Time,
    /// `/api/orders/{id}` and `/api/orders/{id}/pay`: need a member token.
    Order(OrderId),
    /// Forwarded as they are (demo login, admin, health, metrics).
    Forward,
    /// A storefront file from the Wasm bundle.
    Page(String),
    /// A known path with a malformed id.
    BadId(String),
    /// A known path with the wrong method.
    WrongMethod,
    /// Nothing of the contract lives here.
    NotFound,
}

/// Routes a request; `method` is upper case.
pub fn route(method: &str, path: &str) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = method == "GET" || method == "HEAD";
    let post = method == "POST";
    match segments.as_slice() {
        ["api", "seckill", id, "orders"] => with_id(id, post, Route::Buy),
        ["api", "seckill", id, "result"] => with_id(id, get, Route::Result),
        ["api", "products", id] => with_id(id, get, Route::Product),
        ["api", "orders", id] => with_order(id, get),
        ["api", "orders", id, "pay"] => with_order(id, post),
        ["api", "soldout"] => only(get, Route::SoldOut),
        ["api", "time"] => only(get, Route::Time),
        ["api", "session"] => only(post, Route::Forward),
        ["api", "openapi.json"] => only(get, Route::Forward),
        ["api", ..] => Route::NotFound,
        ["admin", ..] | ["healthz"] | ["readyz"] | ["metrics"] => Route::Forward,
        _ if get && seckill_shared::assets::lookup(path).is_some() => Route::Page(path.to_string()),
        _ => Route::NotFound,
    }
}

fn only(allowed: bool, route: Route) -> Route {
    if allowed {
        route
    } else {
        Route::WrongMethod
    }
}

fn with_id(id: &str, allowed: bool, make: fn(ProductId) -> Route) -> Route {
    match id.parse::<ProductId>() {
        Err(_) => Route::BadId(id.to_string()),
        Ok(_) if !allowed => Route::WrongMethod,
        Ok(product) => make(product),
    }
}

fn with_order(id: &str, allowed: bool) -> Route {
    match id.parse::<OrderId>() {
        Err(_) => Route::BadId(id.to_string()),
        Ok(_) if !allowed => Route::WrongMethod,
        Ok(order) => Route::Order(order),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: i64) -> ProductId {
        ProductId::new(id).unwrap()
    }

    #[test]
    fn contract_routes() {
        assert_eq!(route("POST", "/api/seckill/7/orders"), Route::Buy(p(7)));
        assert_eq!(route("GET", "/api/seckill/7/result"), Route::Result(p(7)));
        assert_eq!(route("GET", "/api/products/7"), Route::Product(p(7)));
        assert_eq!(route("GET", "/api/soldout"), Route::SoldOut);
        assert_eq!(route("GET", "/api/time"), Route::Time);
        assert_eq!(
            route("POST", "/api/orders/3/pay"),
            Route::Order(OrderId::new(3).unwrap())
        );
        assert_eq!(
            route("GET", "/api/orders/3"),
            Route::Order(OrderId::new(3).unwrap())
        );
        assert_eq!(route("POST", "/api/session"), Route::Forward);
        assert_eq!(route("GET", "/api/openapi.json"), Route::Forward);
        assert_eq!(route("POST", "/admin/products"), Route::Forward);
        assert_eq!(route("GET", "/metrics"), Route::Forward);
        assert_eq!(route("GET", "/"), Route::Page("/".into()));
    }

    #[test]
    fn malformed_requests() {
        for path in [
            "/api/seckill/abc/orders",
            "/api/seckill/0/orders",
            "/api/seckill/-1/orders",
            "/api/seckill/1.5/orders",
        ] {
            assert!(matches!(route("POST", path), Route::BadId(_)), "{path}");
        }
        assert!(matches!(
            route("GET", "/api/products/99999999999999999999"),
            Route::BadId(_)
        ));
        assert_eq!(route("GET", "/api/seckill/7/orders"), Route::WrongMethod);
        assert_eq!(route("DELETE", "/api/time"), Route::WrongMethod);
        assert_eq!(route("GET", "/api/nothing"), Route::NotFound);
        assert_eq!(route("GET", "/nothing.html"), Route::NotFound);
        assert_eq!(route("POST", "/"), Route::NotFound);
    }
}
