//! Bytes of a served page → text. Pages come in whatever charset their server used (GBK,
//! Shift_JIS, windows-1251, …), often mislabelled or unlabelled, so the decision follows what
//! browsers do, in this order:
//!
//! 1. a byte-order mark (UTF-8, UTF-16LE/BE) wins over everything;
//! 2. a body that is valid UTF-8 is UTF-8 — a wrong `charset=iso-8859-1` label on a UTF-8 page is
//!    far more common on the web than a legacy page that happens to be valid UTF-8;
//! 3. the charset of the HTTP `Content-Type` header, then of a `<meta>` tag near the top;
//! 4. otherwise (no label, or the label decodes to mostly U+FFFD) the statistical detector Firefox
//!    uses for legacy content (`chardetng`), hinted by the URL's top-level domain.

use encoding_rs::Encoding;

/// How many leading bytes are searched for a `<meta charset>`: the HTML standard's prescan limit.
const META_PRESCAN: usize = 1024;

/// Where the chosen charset came from, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharsetSource {
    Bom,
    Utf8,
    HttpHeader,
    Meta,
    Detected,
}

/// A decoded page: its text, the encoding used and why it was chosen.
#[derive(Debug)]
pub struct Decoded {
    pub text: String,
    pub encoding: &'static Encoding,
    pub source: CharsetSource,
}

/// Decode `body`, served with HTTP `content_type` (may be empty) from `url` (may be empty).
pub fn decode_page(body: &[u8], content_type: &str, url: &str) -> Decoded {
    if let Some((encoding, bom_len)) = Encoding::for_bom(body) {
        let (text, _) = encoding.decode_without_bom_handling(&body[bom_len..]);
        return decoded(text.into_owned(), encoding, CharsetSource::Bom);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        return decoded(text.to_string(), encoding_rs::UTF_8, CharsetSource::Utf8);
    }
    let labelled = [
        (charset_label(content_type), CharsetSource::HttpHeader),
        (meta_charset(body), CharsetSource::Meta),
    ];
    for (label, source) in labelled {
        let Some(encoding) = label.and_then(|l| Encoding::for_label(l.as_bytes())) else {
            continue;
        };
        // A UTF-16 label on a page that has no BOM is a known web mislabel: browsers ignore it.
        if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
            continue;
        }
        let (text, had_errors) = encoding.decode_without_bom_handling(body);
        if !had_errors || mostly_clean(&text) {
            return decoded(text.into_owned(), encoding, source);
        }
    }
    // ISO-2022-JP is allowed: we never run the page's scripts, and Japanese mail-style pages
    // still use it. UTF-8 cannot be the answer: a valid UTF-8 body was taken above.
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Allow);
    detector.feed(body, true);
    let encoding = detector.guess(top_level_domain(url), chardetng::Utf8Detection::Deny);
    let (text, _) = encoding.decode_without_bom_handling(body);
    decoded(text.into_owned(), encoding, CharsetSource::Detected)
}

fn decoded(text: String, encoding: &'static Encoding, source: CharsetSource) -> Decoded {
    Decoded {
        text,
        encoding,
        source,
    }
}

/// Fewer than 1 replacement character per 100 chars: a few stray bytes, not the wrong charset.
fn mostly_clean(text: &str) -> bool {
    text.matches('\u{fffd}').count() * 100 <= text.chars().count()
}

/// The `charset=` value in a header or attribute, without quotes.
fn charset_label(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let value = &lower[lower.find("charset")? + 7..];
    let value = value
        .trim_start()
        .strip_prefix('=')?
        .trim_start_matches(['"', '\'', ' ']);
    let end = value
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')))
        .unwrap_or(value.len());
    (end > 0).then(|| value[..end].to_string())
}

/// The charset of a `<meta charset>` or `<meta http-equiv content="…charset=…">` tag in the first
/// [`META_PRESCAN`] bytes.
fn meta_charset(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(META_PRESCAN)]).to_ascii_lowercase();
    head.match_indices("<meta")
        .find_map(|(at, _)| charset_label(&head[at..at + head[at..].find('>')?]))
}

/// `cn` of `http://www.example.cn/x`: chardetng weighs its guess by the domain's usual scripts.
fn top_level_domain(url: &str) -> Option<&[u8]> {
    let host = url
        .split("://")
        .nth(1)?
        .split(['/', ':', '?', '#'])
        .next()?;
    let tld = host.rsplit('.').next()?;
    (!tld.is_empty() && tld.bytes().all(|b| b.is_ascii_alphabetic())).then_some(tld.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &str, label: &str) -> Vec<u8> {
        let encoding = Encoding::for_label(label.as_bytes()).unwrap();
        let (bytes, _, errors) = encoding.encode(text);
        assert!(!errors, "{text} is not representable in {label}");
        bytes.into_owned()
    }

    #[test]
    fn declared_charsets_from_header_and_meta() {
        let text = "<p>中文网页的正文内容，讲述一件事情。</p>";
        let gbk = encode(text, "gbk");
        let page = decode_page(&gbk, "text/html; charset=GBK", "");
        assert_eq!(
            (page.text.as_str(), page.source),
            (text, CharsetSource::HttpHeader)
        );
        let mut meta =
            b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=shift_jis\">".to_vec();
        meta.extend(encode("<p>日本語のページです。</p>", "shift_jis"));
        let page = decode_page(&meta, "text/html", "");
        assert_eq!(page.source, CharsetSource::Meta);
        assert!(
            page.text.ends_with("<p>日本語のページです。</p>"),
            "{}",
            page.text
        );
    }

    #[test]
    fn undeclared_and_mislabelled_pages_are_detected() {
        let russian = "<p>Это страница на русском языке, и в ней довольно много слов, чтобы \
                       определить кодировку без подсказок со стороны сервера.</p>";
        let cp1251 = encode(russian, "windows-1251");
        let page = decode_page(&cp1251, "text/html", "http://example.ru/");
        assert_eq!(page.encoding, encoding_rs::WINDOWS_1251);
        assert_eq!(
            (page.text.as_str(), page.source),
            (russian, CharsetSource::Detected)
        );
        // Labelled UTF-8 but served as GBK: the label decodes to garbage, the detector wins.
        let chinese =
            "<p>这是一个用简体中文写的网页，服务器声明的字符集是错误的，但是内容本身很清楚。</p>";
        let page = decode_page(
            &encode(chinese, "gbk"),
            "text/html; charset=utf-8",
            "http://a.cn/",
        );
        assert_eq!(
            (page.text.as_str(), page.source),
            (chinese, CharsetSource::Detected)
        );
        // Labelled latin-1 but valid UTF-8: UTF-8.
        let page = decode_page(
            "<p>Grüße</p>".as_bytes(),
            "text/html; charset=iso-8859-1",
            "",
        );
        assert_eq!(
            (page.text.as_str(), page.source),
            ("<p>Grüße</p>", CharsetSource::Utf8)
        );
    }

    #[test]
    fn byte_order_mark_wins() {
        let mut utf16 = vec![0xff, 0xfe];
        utf16.extend("<p>Ünïcödé</p>".encode_utf16().flat_map(u16::to_le_bytes));
        let page = decode_page(&utf16, "text/html; charset=iso-8859-1", "");
        assert_eq!(
            (page.text.as_str(), page.source),
            ("<p>Ünïcödé</p>", CharsetSource::Bom)
        );
        let page = decode_page(b"\xef\xbb\xbf<p>x</p>", "", "");
        assert_eq!(
            (page.text.as_str(), page.source),
            ("<p>x</p>", CharsetSource::Bom)
        );
    }
}
