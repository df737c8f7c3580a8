//! Main content of a page: trafilatura's algorithm (rs-trafilatura) — cleaning of boilerplate
//! tags, classes and ids (nav, footer, share, comments, cookie banners), link density and text
//! density pruning, content-selector search with a fallback to the best-scoring subtree —
//! followed by a plain-text pass of our own.

/// Main text of `html`; empty when the page has none (a pure link list, a login form).
pub fn main_content(html: &str, url: &str) -> String {
    let options = rs_trafilatura::Options {
        include_tables: true,
        include_comments: false,
        url: (!url.is_empty()).then(|| url.to_string()),
        ..rs_trafilatura::Options::default()
    };
    match rs_trafilatura::extract_with_options(html, &options) {
        Ok(result) => result.content_text,
        Err(_) => String::new(),
    }
}
