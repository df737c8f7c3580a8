//! Full-page rendering: every visible line, one per block element (html2text, html5ever
//! underneath), without link footnotes or decorations.

/// Visible text of the whole page; scripts, styles and markup dropped.
pub fn full_text(html: &str) -> String {
    html2text::config::plain_no_decorate()
        .link_footnotes(false)
        .allow_width_overflow()
        .string_from_read(html.as_bytes(), 100_000)
        // html2text fails only on I/O errors of its reader, and a byte slice has none.
        .unwrap_or_default()
}
