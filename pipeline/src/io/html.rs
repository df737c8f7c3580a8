//! The payload of a WARC `response` record: HTTP header parsing, chunked transfer decoding, gzip
//! content decoding, then the page's charset and text (see [`crate::extract`]). Responses that
//! are not pages (images, PDFs, JSON, feeds) are skipped as `not_html`.

use std::io::Read;

use super::skip::SkipKind;
use crate::extract::{charset, TextMode};

/// Why a payload is not a document: the skip kind and a detail for the log.
pub type Rejection = (SkipKind, String);

/// What a response's payload is, from its `Content-Type` (or a look at the body without one).
#[derive(Debug, PartialEq, Eq)]
enum Payload {
    Html,
    PlainText,
}

/// Text of the HTTP response block of a page served from `url`, in `mode`, or why it is not a
/// document.
pub fn response_text(block: &[u8], url: &str, mode: TextMode) -> Result<String, Rejection> {
    let (headers, body) = split_http(block)?;
    let content_type = header(headers, "content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut body = body.to_vec();
    if header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        body =
            dechunk(&body).ok_or((SkipKind::MissingHeader, "bad chunked encoding".to_string()))?;
    }
    // Common Crawl stores decoded bodies (and renames the header), but other crawlers keep the
    // body gzipped as served: decode only when it really starts with the gzip magic.
    if body.starts_with(&[0x1f, 0x8b]) {
        let mut decoded = Vec::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut decoded)
            .map_err(|e| (SkipKind::CorruptCompression, format!("gzip body: {e}")))?;
        body = decoded;
    }
    let payload = payload_kind(&content_type, &body)?;
    // UTF-16 pages (with a BOM) hold NUL bytes legitimately; anything else with them is binary.
    if body.contains(&0) && encoding_rs::Encoding::for_bom(&body).is_none() {
        return Err((SkipKind::Binary, "NUL bytes in body".to_string()));
    }
    let page = charset::decode_page(&body, &content_type, url);
    Ok(match payload {
        Payload::PlainText => page.text,
        Payload::Html => mode.text(&page.text),
    })
}

/// HTML or plain text by content type; a response without one is HTML when its body starts with
/// a tag. Other types (images, PDF, JSON, RSS/Atom, JavaScript, CSS) are not documents.
fn payload_kind(content_type: &str, body: &[u8]) -> Result<Payload, Rejection> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    match mime {
        "text/html" | "application/xhtml+xml" => Ok(Payload::Html),
        "text/plain" => Ok(Payload::PlainText),
        "" => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            Ok(if first == Some(&b'<') {
                Payload::Html
            } else {
                Payload::PlainText
            })
        }
        other => Err((
            SkipKind::NotHtml,
            format!("content type `{other}` is not a page"),
        )),
    }
}

/// Split an HTTP response into its header lines and body.
fn split_http(block: &[u8]) -> Result<(&[u8], &[u8]), Rejection> {
    if !block.starts_with(b"HTTP/") {
        return Err((
            SkipKind::MissingHeader,
            "response block has no HTTP status line".into(),
        ));
    }
    let end = find(block, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| find(block, b"\n\n").map(|i| (i, i + 2)))
        .ok_or((
            SkipKind::MissingHeader,
            "HTTP header has no end".to_string(),
        ))?;
    Ok((&block[..end.0], &block[end.1..]))
}

/// Value of header `name` (case-insensitive) among HTTP header lines.
fn header(headers: &[u8], name: &str) -> Option<String> {
    headers.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = String::from_utf8_lossy(line);
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Undo HTTP/1.1 chunked transfer encoding.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let eol = find(body, b"\r\n")?;
        let size_field = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size..)?;
        body = body.strip_prefix(b"\r\n").unwrap_or(body);
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(block: &[u8]) -> Result<String, Rejection> {
        response_text(block, "http://example.com/a", TextMode::FullText)
    }

    #[test]
    fn html_response_becomes_text_without_scripts() {
        let block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
            <html><head><script>var x = 1;</script><style>p{}</style></head>\
            <body><h1>Title</h1><p>Hello <b>world</b>.</p></body></html>";
        let text = text(block).unwrap();
        assert!(text.contains("Title"), "{text}");
        assert!(text.contains("Hello world."), "{text}");
        assert!(!text.contains("var x"), "{text}");
    }

    #[test]
    fn chunked_plain_and_non_page_responses() {
        let block =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nHello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(text(block).unwrap(), "Hello world");
        let image = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n\x89PNG";
        assert_eq!(text(image).unwrap_err().0, SkipKind::NotHtml);
        let pdf = b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4";
        assert_eq!(text(pdf).unwrap_err().0, SkipKind::NotHtml);
        let nul = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>a\x00b</p>";
        assert_eq!(text(nul).unwrap_err().0, SkipKind::Binary);
        // No content type: a body that starts with a tag is HTML.
        let bare = b"HTTP/1.1 200 OK\r\n\r\n  <p>Bare <i>page</i></p>";
        assert_eq!(text(bare).unwrap().trim(), "Bare page");
    }

    #[test]
    fn undeclared_legacy_charsets_are_decoded_not_dropped() {
        let latin1 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\ncaf\xe9 cr\xe8me";
        assert_eq!(text(latin1).unwrap(), "caf\u{e9} cr\u{e8}me");
        let gbk = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n\
            <meta charset=\"gbk\"><p>\xd6\xd0\xce\xc4</p>";
        assert_eq!(text(gbk).unwrap().trim(), "\u{4e2d}\u{6587}");
    }
}
