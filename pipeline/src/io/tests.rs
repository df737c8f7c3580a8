//! Reader and writer behaviour on hand-made good and bad files.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

fn warc_record(kind: &str, uri: &str, block: &[u8], declared_len: Option<usize>) -> Vec<u8> {
    let len = declared_len.unwrap_or(block.len());
    let mut r = format!(
        "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\n\
         WARC-Record-ID: <urn:uuid:{uri}>\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    r.extend_from_slice(block);
    r.extend_from_slice(b"\r\n\r\n");
    r
}

fn gzip_members(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(r).unwrap();
        out.extend(gz.finish().unwrap());
    }
    out
}

fn read_all(path: &Path) -> (Vec<Document>, Vec<Skip>) {
    let (mut docs, mut skips) = (Vec::new(), Vec::new());
    for item in read_documents(path) {
        match item {
            Ok(d) => docs.push(d),
            Err(s) => skips.push(s),
        }
    }
    (docs, skips)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn info(part_of: &str) -> Vec<u8> {
    let fields = format!("software: test\r\nisPartOf: {part_of}\r\n");
    warc_record("warcinfo", "info", fields.as_bytes(), None)
}

#[test]
fn wet_multi_member_gzip_names_source_from_warcinfo() {
    let dir = tempfile::tempdir().unwrap();
    let records = [
        info("CC-MAIN-2024-22"),
        warc_record(
            "conversion",
            "http://a.example/1",
            "first page text".as_bytes(),
            None,
        ),
        warc_record(
            "conversion",
            "http://b.example/2",
            "第二页的文本".as_bytes(),
            None,
        ),
    ];
    let path = write(dir.path(), "dump/x.warc.wet.gz", &gzip_members(&records));
    let (docs, skips) = read_all(&path);
    assert!(skips.is_empty(), "{skips:?}");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].source, "CC-MAIN-2024-22");
    assert_eq!(docs[0].domain, "a.example");
    assert_eq!(
        docs[0].id, "<urn:uuid:http://a.example/1>",
        "ids are kept verbatim, as datatrove does"
    );
    assert_eq!(docs[1].text, "第二页的文本");
}

#[test]
fn lying_content_length_skips_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = warc_record("conversion", "u1", b"good one", None);
    // Too long: claims to run into the next record.
    bytes.extend(warc_record("conversion", "u2", b"too long", Some(40)));
    bytes.extend(warc_record("conversion", "u3", b"good two", None));
    // Too short: the rest of its block must not be taken for a record.
    bytes.extend(warc_record("conversion", "u4", b"too short block", Some(3)));
    bytes.extend(warc_record("conversion", "u5", b"good three", None));
    let path = write(dir.path(), "d/lies.warc", &bytes);
    let (docs, skips) = read_all(&path);
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(texts, ["good one", "good two", "good three"]);
    let kinds: Vec<SkipKind> = skips.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [SkipKind::BadContentLength, SkipKind::BadContentLength]
    );
    assert_eq!(
        docs[0].source, "d",
        "source falls back to the directory name"
    );
}

#[test]
fn truncated_gzip_keeps_whole_records_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            warc_record(
                "conversion",
                &format!("u{i}"),
                format!("text {i}").as_bytes(),
                None,
            )
        })
        .collect();
    let mut bytes = gzip_members(&records);
    bytes.truncate(bytes.len() - 10);
    let path = write(dir.path(), "d/cut.warc.gz", &bytes);
    let (docs, skips) = read_all(&path);
    assert_eq!(docs.len(), 4);
    assert_eq!(skips.len(), 1);
    assert_eq!(skips[0].kind, SkipKind::TruncatedFile);
    assert!(skips[0].to_string().contains("cut.warc.gz"));
}

#[test]
fn bad_records_are_counted_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = warc_record("conversion", "u1", b"caf\xe9 latin-1", None);
    bytes.extend(warc_record("conversion", "u2", b"   \r\n ", None));
    bytes.extend(warc_record("conversion", "u3", b"bin\0ary", None));
    bytes.extend(b"WARC/1.0\r\nWARC-Type: conversion\r\n\r\nno length\r\n\r\n");
    let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n\
        <nav><a href=\"/\">Home</a></nav><p>A paragraph of text that came from an HTML page.</p>";
    bytes.extend(warc_record("response", "u4", html, None));
    let image = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff";
    bytes.extend(warc_record("response", "u5", image, None));
    let path = write(dir.path(), "d/bad.warc", &bytes);
    let (docs, skips) = read_all(&path);
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0].text,
        "A paragraph of text that came from an HTML page."
    );
    let mut counts = SkipCounts::default();
    skips.iter().for_each(|s| counts.record(s));
    let named = counts.to_named();
    assert_eq!(named["invalid_utf8"], 1);
    assert_eq!(named["empty"], 1);
    assert_eq!(named["binary"], 1);
    assert_eq!(named["not_html"], 1);
    assert_eq!(named["missing_header"], 1);
}

#[test]
fn jsonl_plain_gzip_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let lines = "{\"text\":\"one\",\"id\":\"a\",\"url\":\"https://X.org/p\",\"lang\":\"en\"}\n\
                 not json\n\
                 {\"id\":7}\n\
                 \n\
                 {\"text\":\"two\",\"id\":7,\"source\":\"S\",\"meta\":{\"k\":1}}\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(lines.as_bytes()).unwrap();
    let paths = [
        write(dir.path(), "dump/a.jsonl", lines.as_bytes()),
        write(dir.path(), "dump/b.jsonl.gz", &gz.finish().unwrap()),
        write(
            dir.path(),
            "dump/c.jsonl.zst",
            &zstd::encode_all(lines.as_bytes(), 3).unwrap(),
        ),
    ];
    for path in paths {
        let (docs, skips) = read_all(&path);
        assert_eq!(docs.len(), 2, "{path:?}");
        assert_eq!(skips.len(), 2);
        assert!(skips.iter().all(|s| s.kind == SkipKind::BadJson));
        assert_eq!(
            (docs[0].domain.as_str(), docs[0].source.as_str()),
            ("x.org", "dump")
        );
        assert_eq!((docs[1].id.as_str(), docs[1].source.as_str()), ("7", "S"));
        assert_eq!(docs[1].meta["k"], "1");
    }
}

#[test]
fn parquet_round_trip_in_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/part.parquet");
    let mut writer = DocumentWriter::with_batch_rows(&path, 3).unwrap();
    let docs: Vec<Document> = (0..8)
        .map(|i| Document {
            id: format!("d{i}"),
            text: format!("text {i} 文"),
            url: format!("http://h{i}.example/"),
            domain: format!("h{i}.example"),
            lang: "en".into(),
            source: "S".into(),
            meta: [("k".to_string(), i.to_string())].into(),
        })
        .collect();
    for d in &docs {
        writer.write(d).unwrap();
    }
    assert!(!path.exists(), "nothing at the final name before finish");
    assert_eq!(writer.finish().unwrap(), 8);
    assert!(!tmp_path(&path).exists());
    let (back, skips) = read_all(&path);
    assert!(skips.is_empty());
    assert_eq!(back, docs);
}

#[test]
fn parquet_without_text_column_is_one_skip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-text.parquet");
    let mut df = polars::df!("body" => ["a", "b"]).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    polars::prelude::ParquetWriter::new(file)
        .finish(&mut df)
        .unwrap();
    let (docs, skips) = read_all(&path);
    assert!(docs.is_empty());
    assert_eq!(skips.len(), 1);
    assert_eq!(skips[0].kind, SkipKind::BadParquet);
    let garbage = write(dir.path(), "garbage.parquet", b"not parquet at all");
    assert_eq!(read_all(&garbage).1[0].kind, SkipKind::BadParquet);
}

/// The real Common Crawl and warcio/resiliparse files beside the project, when present.
#[test]
fn real_files_in_shared_data_read_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if !root.exists() {
        // The real files sit beside the project (they may not be copied into it); a checkout
        // without them still runs every generated-data test.
        eprintln!(
            "NOTE: {} absent: real-file reader checks not run",
            root.display()
        );
        return;
    }
    let sample = root.join("real-warc/cc-main-2020-34-sample.warc.gz");
    let (docs, skips) = read_all(&sample);
    assert!(docs.len() >= 10, "{} docs {skips:?}", docs.len());
    assert!(docs.iter().all(|d| d.source == "CC-MAIN-2020-34"));
    let (wet, skips) = read_all(&root.join("real-warc/cc-main-2024-22-whirlwind.warc.wet.gz"));
    assert_eq!((wet.len(), skips.len()), (1, 0));
    assert_eq!(wet[0].lang, "es");
    let (_, skips) = read_all(&root.join("malformed/clipped.warc.gz"));
    assert!(
        skips.iter().any(|s| s.kind == SkipKind::TruncatedFile),
        "{skips:?}"
    );
    for path in list_inputs(&root.join("malformed")).unwrap() {
        let (docs, skips) = read_all(&path);
        eprintln!(
            "{}: {} docs, {} skips {:?}",
            path.display(),
            docs.len(),
            skips.len(),
            skips.iter().map(|s| s.kind).collect::<Vec<_>>()
        );
    }
}

#[test]
fn warc_html_is_main_content_by_default_and_full_text_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let article =
        "Die Stadtverwaltung hat am Dienstag beschlossen, den alten Güterbahnhof in einen \
                   Park mit Wegen, Gärten und einer kleinen Bühne umzubauen.";
    let menu: String = ["Startseite", "Politik", "Kultur", "Sport", "Kontakt"]
        .iter()
        .map(|m| format!("<li><a href=\"/{m}\">{m}</a></li>"))
        .collect();
    let page = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=windows-1252\r\n\r\n\
         <html><body><nav><ul>{menu}</ul></nav><article><p>{article}</p></article>\
         <footer>Impressum | Datenschutz</footer></body></html>"
    );
    // Served as windows-1252, as the header says: ü and ä are single bytes.
    let (body, _, _) = encoding_rs::WINDOWS_1252.encode(&page);
    let path = write(
        dir.path(),
        "d/page.warc",
        &warc_record("response", "http://example.de/a", &body, None),
    );
    let (docs, skips) = read_all(&path);
    assert!(skips.is_empty(), "{skips:?}");
    assert_eq!(docs[0].text, article);
    let full: Vec<Document> = read_documents_with(
        &path,
        ReadOptions {
            html: TextMode::FullText,
        },
    )
    .map(Result::unwrap)
    .collect();
    for part in [article, "Startseite", "Impressum"] {
        assert!(full[0].text.contains(part), "{}", full[0].text);
    }
}
