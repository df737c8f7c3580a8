//! HTML → text for WARC `response` records.
//!
//! Two ways to turn a page into a document's text ([`TextMode`]):
//!
//! - **main content** (the default): the article, post or documentation body with navigation,
//!   footers, link lists, cookie banners and comment sections removed, as FineWeb extracts with
//!   trafilatura — the text a model should learn from. Headings, paragraphs, lists, tables and
//!   `<pre>` code come out as plain lines.
//! - **full text**: every visible line of the page, as a browser's text rendering (and Common
//!   Crawl's WET files) would give it; kept for comparisons and for pages whose layout defeats
//!   boilerplate detection.
//!
//! Charset detection ([`charset`]) is shared by both.

pub mod charset;
mod dom;
mod full_text;
mod main_content;

use serde::{Deserialize, Serialize};

pub use full_text::full_text;
pub use main_content::main_content;

/// Which text of an HTML page becomes the document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextMode {
    /// Main content only (boilerplate removed); pages without any are skipped as empty.
    #[default]
    MainContent,
    /// The whole page's visible text.
    FullText,
}

impl TextMode {
    /// Text of `html` in this mode.
    pub fn text(self, html: &str) -> String {
        match self {
            TextMode::MainContent => main_content(html),
            TextMode::FullText => full_text(html),
        }
    }
}

#[cfg(test)]
mod tests;
