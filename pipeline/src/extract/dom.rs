//! A compact read-only copy of the parsed page for the extractor: one pass over the html5ever
//! tree (via `dom_query`) keeps elements and text, drops what never holds readable text
//! (scripts, styles, forms' controls, SVG, hidden elements, comments), and precomputes per node
//! the text and link-text lengths every later rule needs, so scoring and rendering are plain
//! loops over a `Vec`.

use dom_query::{Document, NodeRef};

/// Elements whose content is never readable text.
const SKIPPED: [&str; 14] = [
    "head", "script", "style", "noscript", "template", "svg", "math", "iframe", "select", "button",
    "input", "textarea", "object", "canvas",
];

/// One element or text run of the page.
#[derive(Debug)]
pub struct Node {
    /// Lowercase tag name; empty for a text node.
    pub tag: String,
    /// Lowercase `class` and `id` joined by a space (what boilerplate patterns match against).
    pub class_id: String,
    /// `role`, lowercase.
    pub role: String,
    /// Text of a text node, as in the source (whitespace not yet collapsed).
    pub text: String,
    pub children: Vec<usize>,
    /// Characters of non-whitespace text in the subtree, and in links (`<a>`) in it.
    pub text_len: usize,
    pub link_len: usize,
    /// Characters of prose in the subtree: text of paragraphs (`p`, `pre`, `blockquote`) that
    /// are not mostly links. What a content container has most of and a sidebar little.
    pub prose_len: usize,
}

/// The page: `nodes[0]` is the root (`<html>`).
pub struct Page {
    pub nodes: Vec<Node>,
}

impl Page {
    /// Parse `html` (never fails: html5ever recovers from any markup).
    pub fn parse(html: &str) -> Page {
        let doc = Document::from(html);
        let mut page = Page { nodes: Vec::new() };
        page.nodes
            .push(element("html", String::new(), String::new()));
        let root = doc.root();
        for child in root.children_it(false) {
            if child.node_name().as_deref() == Some("html") {
                for c in child.children_it(false) {
                    page.add(0, &c);
                }
            } else {
                page.add(0, &child);
            }
        }
        page.measure(0, false);
        page
    }

    fn add(&mut self, parent: usize, node: &NodeRef) {
        if node.is_text() {
            let text = node.text().to_string();
            if !text.is_empty() {
                let id = self.nodes.len();
                self.nodes.push(Node {
                    text,
                    ..element("", String::new(), String::new())
                });
                self.nodes[parent].children.push(id);
            }
            return;
        }
        if !node.is_element() {
            return;
        }
        let tag = node
            .node_name()
            .map(|n| n.to_ascii_lowercase())
            .unwrap_or_default();
        if SKIPPED.contains(&tag.as_str()) || is_hidden(node) {
            return;
        }
        let class_id = format!(
            "{} {}",
            node.class().as_deref().unwrap_or(""),
            node.id_attr().as_deref().unwrap_or("")
        )
        .to_ascii_lowercase();
        let role = node
            .attr("role")
            .map(|r| r.to_ascii_lowercase())
            .unwrap_or_default();
        let id = self.nodes.len();
        self.nodes.push(element(&tag, class_id, role));
        self.nodes[parent].children.push(id);
        for child in node.children_it(false) {
            self.add(id, &child);
        }
    }

    /// Fill in `text_len`, `link_len` and `prose_len` bottom-up.
    fn measure(&mut self, id: usize, in_link: bool) -> (usize, usize) {
        let node = &self.nodes[id];
        if node.tag.is_empty() {
            let n = node.text.chars().filter(|c| !c.is_whitespace()).count();
            let links = if in_link { n } else { 0 };
            self.nodes[id].text_len = n;
            self.nodes[id].link_len = links;
            return (n, links);
        }
        let in_link = in_link || node.tag == "a";
        let is_paragraph = matches!(node.tag.as_str(), "p" | "pre" | "blockquote");
        let (mut text, mut links, mut prose) = (0, 0, 0);
        for i in 0..self.nodes[id].children.len() {
            let child = self.nodes[id].children[i];
            let (t, l) = self.measure(child, in_link);
            text += t;
            links += l;
            prose += self.nodes[child].prose_len;
        }
        if is_paragraph && links * 2 < text {
            prose = text;
        }
        let node = &mut self.nodes[id];
        node.text_len = text;
        node.link_len = links;
        node.prose_len = prose;
        (text, links)
    }

    /// Share of the subtree's text that sits in links (0 for an empty subtree).
    pub fn link_density(&self, id: usize) -> f64 {
        let n = &self.nodes[id];
        if n.text_len == 0 {
            0.0
        } else {
            n.link_len as f64 / n.text_len as f64
        }
    }

    /// Text of the subtree, whitespace collapsed to single spaces.
    pub fn flat_text(&self, id: usize) -> String {
        let mut out = String::new();
        self.collect_text(id, &mut out);
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn collect_text(&self, id: usize, out: &mut String) {
        let node = &self.nodes[id];
        if node.tag.is_empty() {
            out.push_str(&node.text);
        } else {
            for &c in &node.children {
                self.collect_text(c, out);
                out.push(' ');
            }
        }
    }
}

fn element(tag: &str, class_id: String, role: String) -> Node {
    Node {
        tag: tag.to_string(),
        class_id,
        role,
        text: String::new(),
        children: Vec::new(),
        text_len: 0,
        link_len: 0,
        prose_len: 0,
    }
}

/// `hidden`, `aria-hidden="true"` or an inline `display:none` / `visibility:hidden`.
fn is_hidden(node: &NodeRef) -> bool {
    if node.has_attr("hidden") || node.attr("aria-hidden").as_deref() == Some("true") {
        return true;
    }
    node.attr("style").is_some_and(|s| {
        let s: String = s.to_ascii_lowercase().split_whitespace().collect();
        s.contains("display:none") || s.contains("visibility:hidden")
    })
}
