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
    /// A fingerprint of the body, computed at compile time: served as the
    /// ETag, so browsers revalidate cheaply and never mix a new page with an
    /// old script after a deploy.
    pub etag: u64,
}

/// How pages are cached: always revalidated (with the ETag).
pub const CACHE_CONTROL: &str = "no-cache";

impl Asset {
    /// The quoted ETag header value.
    pub fn etag_header(&self) -> String {
        format!("\"{:016x}\"", self.etag)
    }

    /// Whether an `If-None-Match` header value already names this body.
    pub fn matches(&self, if_none_match: &str) -> bool {
        let tag = self.etag_header();
        if_none_match
            .split(',')
            .any(|candidate| candidate.trim() == tag || candidate.trim() == "*")
    }
}

/// FNV-1a, in a `const fn` so the fingerprint is part of the binary.
const fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! web_file {
    ($file:literal, $content_type:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/", $file));
        Asset {
            content_type: $content_type,
            body: BODY,
            etag: const { fingerprint(BODY) },
        }
    }};
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
    fn etags_name_the_content() {
        let (index, app) = (lookup("/").unwrap(), lookup("/app.js").unwrap());
        assert_ne!(index.etag, app.etag);
        assert!(index.matches(&index.etag_header()));
        assert!(index.matches(&format!("\"x\", {}", index.etag_header())));
        assert!(!index.matches(&app.etag_header()));
    }

    #[test]
    fn index_is_html() {
        let index = lookup("/").unwrap();
        assert!(index.content_type.starts_with("text/html"));
        assert!(std::str::from_utf8(index.body).unwrap().contains("<html"));
        assert!(lookup("/../Cargo.toml").is_none());
    }
}
