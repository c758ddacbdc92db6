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
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_html() {
        let index = lookup("/").unwrap();
        assert!(index.content_type.starts_with("text/html"));
        assert!(std::str::from_utf8(index.body).unwrap().contains("<html"));
        assert!(lookup("/../Cargo.toml").is_none());
    }
}
