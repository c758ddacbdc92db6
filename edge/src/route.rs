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
    /// A known path with the wrong method: `405` with `Allow`.
    WrongMethod {
        allow: &'static str,
    },
    /// Nothing of the contract lives here.
    NotFound,
}

const GET: &str = "GET, HEAD";
const POST: &str = "POST";

/// Routes a request by its method as sent (any case; the Workers runtime
/// would read a method it does not know, such as `QUERY`, as `GET`) and
/// its path.
pub fn route(method: &str, path: &str) -> Route {
    let method = method.to_ascii_uppercase();
    let method = method.as_str();
    let allows = |allow: &'static str| allow.split(", ").any(|m| m == method);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "seckill", id, "orders"] => with_id(id, allows(POST), POST, Route::Buy),
        ["api", "seckill", id, "result"] => with_id(id, allows(GET), GET, Route::Result),
        ["api", "products", id] => with_id(id, allows(GET), GET, Route::Product),
        ["api", "orders", id] => with_order(id, allows(GET), GET),
        ["api", "orders", id, "pay"] => with_order(id, allows(POST), POST),
        ["api", "soldout"] => only(allows(GET), GET, Route::SoldOut),
        ["api", "time"] => only(allows(GET), GET, Route::Time),
        ["api", "session"] => only(allows(POST), POST, Route::Forward),
        ["api", "openapi.json"] => only(allows(GET), GET, Route::Forward),
        ["api", ..] => Route::NotFound,
        // The origin answers these, its 405s included; a method it could
        // not be sent faithfully is refused here.
        ["admin", ..] | ["healthz"] | ["readyz"] | ["metrics"] => {
            const FORWARDABLE: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
            only(allows(FORWARDABLE), FORWARDABLE, Route::Forward)
        }
        _ if allows(GET) && seckill_shared::assets::lookup(path).is_some() => {
            Route::Page(path.to_string())
        }
        _ => Route::NotFound,
    }
}

fn only(allowed: bool, allow: &'static str, route: Route) -> Route {
    if allowed {
        route
    } else {
        Route::WrongMethod { allow }
    }
}

fn with_id(id: &str, allowed: bool, allow: &'static str, make: fn(ProductId) -> Route) -> Route {
    match id.parse::<ProductId>() {
        Err(_) => Route::BadId(id.to_string()),
        Ok(_) if !allowed => Route::WrongMethod { allow },
        Ok(product) => make(product),
    }
}

fn with_order(id: &str, allowed: bool, allow: &'static str) -> Route {
    match id.parse::<OrderId>() {
        Err(_) => Route::BadId(id.to_string()),
        Ok(_) if !allowed => Route::WrongMethod { allow },
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
        assert_eq!(
            route("GET", "/api/seckill/7/orders"),
            Route::WrongMethod { allow: "POST" }
        );
        assert_eq!(
            route("DELETE", "/api/time"),
            Route::WrongMethod { allow: "GET, HEAD" }
        );
        // A method the runtime does not know is not taken for GET.
        assert_eq!(
            route("QUERY", "/api/time"),
            Route::WrongMethod { allow: "GET, HEAD" }
        );
        assert!(matches!(
            route("QUERY", "/admin/products"),
            Route::WrongMethod { .. }
        ));
        assert_eq!(route("get", "/api/time"), Route::Time);
        assert_eq!(route("GET", "/api/nothing"), Route::NotFound);
        assert_eq!(route("GET", "/nothing.html"), Route::NotFound);
        assert_eq!(route("POST", "/"), Route::NotFound);
    }
}
