//! Main content of a page, in three passes over [`Page`], with general rules only (no site
//! lists), in the manner of readability and trafilatura:
//!
//! 1. **boilerplate**: navigation, headers, footers, asides and elements whose class or id name a
//!    boilerplate part (menu, sidebar, comments, share, cookie, related, breadcrumb, ads …) or
//!    whose ARIA role is navigation/banner/contentinfo are cut out — unless they hold most of
//!    the page's text (a `<body class="sidebar-layout">` is not boilerplate);
//! 2. **scoring**: every paragraph-like block with a sentence of text scores by its length and
//!    punctuation, discounted by its link density, and passes its score to its ancestors (a
//!    parent fully, a grandparent half, …); container classes that name content (article, post,
//!    entry, story …) add to it. The best container wins, with those of its siblings that score
//!    close to it (an article split over several `<div>`s);
//! 3. **rendering**: the winners' text as plain lines — a line per paragraph, heading, list item
//!    or table row, `<pre>` kept verbatim — leaving out link lists inside the content (related
//!    stories, tag clouds), the page title `<h1>` and figure captions.

use super::dom::Page;

/// Class/id words that name a boilerplate part of a page, whatever else the name says
/// (`comment-content` is a comment).
const BOILERPLATE: [&str; 40] = [
    "nav",
    "navbar",
    "navigation",
    "menu",
    "menubar",
    "submenu",
    "footer",
    "sidebar",
    "aside",
    "comment",
    "comments",
    "share",
    "sharing",
    "social",
    "cookie",
    "cookies",
    "consent",
    "gdpr",
    "breadcrumb",
    "breadcrumbs",
    "related",
    "ad",
    "ads",
    "advert",
    "advertisement",
    "promo",
    "sponsor",
    "sponsored",
    "subscribe",
    "newsletter",
    "pagination",
    "pager",
    "outbrain",
    "taboola",
    "disqus",
    "signup",
    "login",
    "copyright",
    "byline",
    "dateline",
];

/// Class/id words of parts that are boilerplate unless the name also says content
/// (`widget` is a sidebar box, `widget Blog` holds a blog's posts).
const WEAK_BOILERPLATE: [&str; 12] = [
    "widget",
    "widgets",
    "banner",
    "popup",
    "modal",
    "tags",
    "tagcloud",
    "masthead",
    "toolbar",
    "recommended",
    "trending",
    "popular",
];

/// Prefixes of compound class words (`sharebar`, `commentlist`, `socialicons` …).
const BOILERPLATE_PREFIXES: [&str; 14] = [
    "share",
    "social",
    "comment",
    "cookie",
    "sidebar",
    "footer",
    "related",
    "breadcrumb",
    "advert",
    "sponsor",
    "subscri",
    "newsletter",
    "navbar",
    "pagination",
];

/// Class/id words that name the content container.
const CONTENT: [&str; 10] = [
    "article", "content", "main", "post", "entry", "body", "text", "story", "hentry", "blog",
];

/// ARIA roles of boilerplate landmarks.
const BOILERPLATE_ROLES: [&str; 8] = [
    "navigation",
    "banner",
    "contentinfo",
    "complementary",
    "dialog",
    "alertdialog",
    "menu",
    "search",
];

/// Blocks that hold paragraphs of running text.
const PARAGRAPHS: [&str; 8] = ["p", "pre", "blockquote", "td", "dd", "li", "div", "section"];

/// Elements rendered on lines of their own.
const BLOCKS: [&str; 33] = [
    "p",
    "div",
    "section",
    "article",
    "main",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "pre",
    "blockquote",
    "header",
    "footer",
    "form",
    "fieldset",
    "address",
    "center",
    "details",
    "summary",
    "hr",
    "tbody",
    "thead",
    "body",
];

/// A paragraph must have this many characters (not counting spaces) to score.
const MIN_PARAGRAPH: usize = 25;

/// A boilerplate-named element is kept when it holds more than this share of the body's prose
/// (a layout class such as `l-sidebar-fixed` around the article).
const MAX_BOILERPLATE_SHARE: f64 = 0.5;

/// Main text of `html`; empty when the page has none (a pure link list, a login form).
pub fn main_content(html: &str) -> String {
    let page = Page::parse(html);
    let body = page.nodes[0]
        .children
        .iter()
        .copied()
        .find(|&c| page.nodes[c].tag == "body")
        .unwrap_or(0);
    let mut cut = vec![false; page.nodes.len()];
    mark_boilerplate(&page, body, page.nodes[body].prose_len, false, &mut cut);
    let scores = score(&page, body, &cut);
    let Some(top) = (0..page.nodes.len())
        .filter(|&i| scores[i] > 0.0)
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
    else {
        return String::new();
    };
    let mut out = String::new();
    for id in with_siblings(&page, top, &scores, &cut) {
        render(&page, id, &cut, &mut out);
        out.push('\n');
    }
    tidy(&out)
}

/// Words of a class/id string: split on anything but letters and digits.
fn words(class_id: &str) -> impl Iterator<Item = &str> {
    class_id
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

fn is_boilerplate_name(class_id: &str) -> bool {
    let strong = words(class_id)
        .any(|w| BOILERPLATE.contains(&w) || BOILERPLATE_PREFIXES.iter().any(|p| w.starts_with(p)));
    strong || (words(class_id).any(|w| WEAK_BOILERPLATE.contains(&w)) && !is_content_name(class_id))
}

fn is_content_name(class_id: &str) -> bool {
    words(class_id).any(|w| CONTENT.contains(&w))
}

/// Mark boilerplate subtrees in `cut` (pass 1).
fn mark_boilerplate(page: &Page, id: usize, body_prose: usize, in_article: bool, cut: &mut [bool]) {
    let node = &page.nodes[id];
    if node.tag.is_empty() {
        return;
    }
    let protected = matches!(node.tag.as_str(), "html" | "body" | "article" | "main")
        || node.prose_len as f64 > MAX_BOILERPLATE_SHARE * body_prose as f64;
    let by_tag = match node.tag.as_str() {
        "nav" | "aside" | "menu" | "footer" => true,
        // The site's header holds its menu; an article's own header holds its title.
        "header" => !in_article,
        _ => false,
    };
    if !protected
        && (by_tag
            || BOILERPLATE_ROLES.contains(&node.role.as_str())
            || is_boilerplate_name(&node.class_id))
    {
        cut[id] = true;
        return;
    }
    let in_article = in_article || matches!(node.tag.as_str(), "article" | "main");
    for &c in &node.children {
        mark_boilerplate(page, c, body_prose, in_article, cut);
    }
}

/// Content score of every container (pass 2); 0 for nodes that are not candidates.
fn score(page: &Page, body: usize, cut: &[bool]) -> Vec<f64> {
    let n = page.nodes.len();
    let mut parent = vec![usize::MAX; n];
    let mut order = vec![body];
    let mut i = 0;
    while i < order.len() {
        let id = order[i];
        i += 1;
        if cut[id] {
            continue;
        }
        for &c in &page.nodes[id].children {
            parent[c] = id;
            order.push(c);
        }
    }
    let mut raw = vec![0.0f64; n];
    let mut candidate = vec![false; n];
    for &id in &order {
        let node = &page.nodes[id];
        if cut[id] || !PARAGRAPHS.contains(&node.tag.as_str()) {
            continue;
        }
        // div/section/li/td count only for the text directly in them (not in child blocks),
        // else an outer div would score every paragraph again.
        let own = if matches!(node.tag.as_str(), "div" | "section" | "li" | "td") {
            own_text(page, id)
        } else {
            page.flat_text(id)
        };
        let len = own.chars().filter(|c| !c.is_whitespace()).count();
        if len < MIN_PARAGRAPH {
            continue;
        }
        let commas = own
            .chars()
            .filter(|c| matches!(c, ',' | '，' | '、' | '。' | '؛' | '،'))
            .count();
        let links = if node.tag == "p" {
            page.link_density(id).min(0.7)
        } else {
            page.link_density(id)
        };
        let s = (1.0 + commas as f64 + (len as f64 / 100.0).min(3.0)) * (1.0 - links);
        let mut up = parent[id];
        for level in 0..5 {
            if up == usize::MAX {
                break;
            }
            candidate[up] = true;
            raw[up] += match level {
                0 => s,
                1 => s / 2.0,
                _ => s / (level as f64 * 3.0),
            };
            up = parent[up];
        }
    }
    (0..n)
        .map(|id| {
            if !candidate[id] {
                return 0.0;
            }
            let node = &page.nodes[id];
            let mut bonus = match node.tag.as_str() {
                "article" => 10.0,
                "main" | "div" | "section" => 5.0,
                "pre" | "td" | "blockquote" => 3.0,
                "li" | "ul" | "ol" | "form" => -3.0,
                _ => 0.0,
            };
            if is_content_name(&node.class_id) {
                bonus += 25.0;
            }
            (raw[id] + bonus) * (1.0 - page.link_density(id))
        })
        .collect()
}

/// Text directly inside `id` and its inline children (not inside nested block elements).
fn own_text(page: &Page, id: usize) -> String {
    let mut out = String::new();
    for &c in &page.nodes[id].children {
        let child = &page.nodes[c];
        if child.tag.is_empty() {
            out.push_str(&child.text);
        } else if !BLOCKS.contains(&child.tag.as_str()) {
            out.push_str(&page.flat_text(c));
        }
        out.push(' ');
    }
    out
}

/// The winner and those of its siblings that belong to the same content: a score of at least a
/// fifth of the winner's, or a paragraph of plain prose.
fn with_siblings(page: &Page, top: usize, scores: &[f64], cut: &[bool]) -> Vec<usize> {
    let Some(parent) = (0..page.nodes.len()).find(|&p| page.nodes[p].children.contains(&top))
    else {
        return vec![top];
    };
    let threshold = (scores[top] * 0.2).max(10.0);
    page.nodes[parent]
        .children
        .iter()
        .copied()
        .filter(|&s| {
            if s == top {
                return true;
            }
            if cut[s] {
                return false;
            }
            let node = &page.nodes[s];
            scores[s] >= threshold
                || (node.tag == "p" && node.text_len > 80 && page.link_density(s) < 0.25)
        })
        .collect()
}

/// Plain text of `id` into `out` (pass 3).
fn render(page: &Page, id: usize, cut: &[bool], out: &mut String) {
    if cut[id] {
        return;
    }
    let node = &page.nodes[id];
    let tag = node.tag.as_str();
    if tag.is_empty() {
        push_text(out, &node.text);
        return;
    }
    match tag {
        "h1" | "figure" | "figcaption" => return,
        "br" => {
            out.push('\n');
            return;
        }
        "pre" => {
            out.push('\n');
            out.push_str(&raw_text(page, id));
            out.push('\n');
            return;
        }
        _ => {}
    }
    // Link lists and link blocks inside the content: related stories, tags, "read more". A long
    // paragraph stays even when linked a lot (people's names with pop-up cards of links).
    let is_list_like = matches!(tag, "ul" | "ol" | "dl" | "div" | "section" | "table" | "li")
        || (tag == "p" && node.text_len < 100);
    if is_list_like && node.text_len > 0 && page.link_density(id) > 0.5 {
        return;
    }
    let block = BLOCKS.contains(&tag);
    if block {
        out.push('\n');
    }
    if matches!(tag, "td" | "th") {
        out.push('\t');
    }
    for &c in &node.children {
        render(page, c, cut, out);
    }
    if block {
        out.push('\n');
    }
}

/// Text of a subtree exactly as in the source (for `<pre>`).
fn raw_text(page: &Page, id: usize) -> String {
    let node = &page.nodes[id];
    if node.tag.is_empty() {
        return node.text.clone();
    }
    if node.tag == "br" {
        return "\n".to_string();
    }
    node.children.iter().map(|&c| raw_text(page, c)).collect()
}

/// Append running text with whitespace collapsed to single spaces.
fn push_text(out: &mut String, text: &str) {
    let starts_space = text.starts_with(char::is_whitespace);
    let ends_space = text.ends_with(char::is_whitespace);
    let mut words = text.split_whitespace().peekable();
    if words.peek().is_none() {
        if !text.is_empty() && !out.ends_with([' ', '\n', '\t']) {
            out.push(' ');
        }
        return;
    }
    if starts_space && !out.ends_with([' ', '\n', '\t']) {
        out.push(' ');
    }
    let mut first = true;
    for w in words {
        if !first {
            out.push(' ');
        }
        out.push_str(w);
        first = false;
    }
    if ends_space {
        out.push(' ');
    }
}

/// Lines trimmed, blank lines dropped (a `<pre>` block's inner blank lines too: they carry no
/// text), tabs between table cells kept.
fn tidy(text: &str) -> String {
    text.lines()
        .map(|l| l.trim_matches(|c: char| c == ' ' || c == '\t').trim_end())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}
