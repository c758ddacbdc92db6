//! The storefront's static files, compiled into both binaries.
//!
//! The files live in `web/` at the repository root. The origin serves them
//! and the edge serves the same bytes from its Wasm bundle, so a page looks
//! the same whichever answered, and there is no build step and no CDN
//! upload to forget.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! web_file {
    ($file:literal, $content_type:literal) => {
        Asset {
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/", $file)),
        }
    };
}

/// The file served at `path` (`/` is `index.html`), if any.
pub fn lookup(path: &str) -> Option<Asset> {
    Some(match path {
        "/" | "/index.html" => web_file!("index.html", "text/html; charset=utf-8"),
        "/ops.html" => web_file!("ops.html", "text/html; charset=utf-8"),
        "/app.js" => web_file!("app.js", "text/javascript; charset=utf-8"),
        "/ops.js" => web_file!("ops.js", "text/javascript; charset=utf-8"),
        "/api.js" => web_file!("api.js", "text/javascript; charset=utf-8"),
        "/style.css" => web_file!("style.css", "text/css; charset=utf-8"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_its_scripts_are_embedded() {
        for (path, kind) in [
            ("/ops.html", "text/html"),
            ("/app.js", "text/javascript"),
            ("/ops.js", "text/javascript"),
            ("/api.js", "text/javascript"),
            ("/style.css", "text/css"),
        ] {
            let asset = lookup(path).unwrap_or_else(|| panic!("{path} is not embedded"));
            assert!(asset.content_type.starts_with(kind), "{path}");
            assert!(!asset.body.is_empty());
        }
        // Every script a page loads is itself embedded.
        for page in ["/", "/ops.html"] {
            let html = std::str::from_utf8(lookup(page).unwrap().body).unwrap();
            for src in html
                .split("src=\"")
                .skip(1)
                .chain(html.split("href=\"/").skip(1))
            {
                let path = format!(
                    "/{}",
                    src.split('"').next().unwrap().trim_start_matches('/')
                );
                if path.ends_with(".js") || path.ends_with(".css") {
                    assert!(
                        lookup(&path).is_some(),
                        "{page} loads {path}, which is not embedded"
                    );
                }
            }
        }
    }

    #[test]
    fn index_is_html() {
        let index = lookup("/").unwrap();
        assert!(index.content_type.starts_with("text/html"));
        assert!(std::str::from_utf8(index.body).unwrap().contains("<html"));
        assert!(lookup("/../Cargo.toml").is_none());
    }
}
