"""Build a Common-Crawl-like dedup benchmark input from real, human-written text.

    corpus.py EXTRACTED_DEBS OUT MB [SEED]

EXTRACTED_DEBS holds Debian documentation packages unpacked with `dpkg-deb -x` (one folder per
package, see scripts/bench-dedup): man pages (groff) in Chinese, Japanese, German, French,
Russian, Spanish, Polish, Portuguese and English, the Linux kernel and Python reStructuredText
sources (with the kernel's Chinese, Japanese, Korean and Italian translations), Perl's POD, and
HTML manuals (GIMP, PostgreSQL, Debian Reference, Debian Handbook, Debian Edu in Chinese). Markup
is stripped crudely; one man page / source file / HTML page is one document, and documents over
20 KB are cut at paragraph boundaries into parts of at most 20 KB (a web page rarely holds a
whole book chapter); documents under 300 characters are dropped (stubs such as `.so` links), and
so are the packages' own exact duplicates (see main); their near duplicates stay.

The documents are shuffled (fixed seed) and spread over three dumps. Duplication is injected the
way it shows up across crawls, and recorded as ground truth:
- exact copies in another dump (same text, other URL),
- near copies (a mirror or a later crawl) with 1–3 web-like edits: site boilerplate header and
  footer added, numbers and dates changed, a paragraph added (from another page of the same
  language) or removed, a few words replaced, deleted or inserted, or the page truncated.
Each near copy records its true Jaccard similarity to the original: the shingle definition of
issue 3 (NFKC, lowercase, accents stripped, numbers → 0, punctuation → space, whitespace collapsed;
word 5-grams, and in Chinese/Japanese runs, where a character counts as half a word, windows of
10 characters), computed exactly here, independently of either tool.

Documents are taken until the input (originals and copies) holds MB megabytes of text. Output:
OUT/input/shard-NN.jsonl.gz (8 shards sorted by (dump, id), so both tools keep the same copy of a
cluster: the one in the oldest dump) and OUT/truth.jsonl (id, kind: original / exact_dup /
near_dup, dup_of, jaccard, lang, edits).
"""

import gzip
import html
import json
import os
import random
import re
import sys
import unicodedata
import uuid

import xxhash

src, out, mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 7)
DUMPS = ["CC-MAIN-2024-10", "CC-MAIN-2024-18", "CC-MAIN-2024-26"]
SHARDS = 8
MAX_DOC, MIN_DOC = 20_000, 300
P_EXACT, P_NEAR = 0.12, 0.15  # chance that an original gets exact / near copies

# --- markup stripping ------------------------------------------------------------------------

GROFF_CHARS = {"em": "—", "en": "–", "hy": "-", "aq": "'", "dq": '"', "lq": "“", "rq": "”",
               "oq": "‘", "cq": "’", "co": "©", "rg": "®", "bu": "•", "mu": "×", "de": "°",
               "<=": "≤", ">=": "≥", "->": "→", "<-": "←", "ti": "~", "ha": "^", "rs": "\\"}
GROFF_TEXT_MACROS = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SB", "SM", "SH", "SS", "IP",
                     "TQ", "UR", "MT", "Nm", "Nd", "Sh", "Ss", "Fl", "Ar", "Op", "Pa", "Xr", "Em"}


def groff_inline(s):
    s = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", s)  # font changes
    s = re.sub(r"\\\*(\[[^\]]*\]|\(..|.)", "", s)  # string registers
    s = re.sub(r"\\\((..)", lambda m: GROFF_CHARS.get(m.group(1), ""), s)
    s = re.sub(r"\\\[([^\]]*)\]", lambda m: GROFF_CHARS.get(m.group(1), ""), s)
    s = re.sub(r"\\[sv]'?[-+]?\d*'?", "", s)
    s = s.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").replace("\\~", " ")
    return re.sub(r"\\[&/,|^%c:]", "", s)


def groff_to_text(raw):
    lines, skipping = [], False
    for line in raw.splitlines():
        if skipping:  # inside a macro definition (.de) or ignored block (.ig), up to ".."
            skipping = line.strip() != ".."
            continue
        if re.match(r"[.'](de|de1|ig|am)\b", line):
            skipping = True
            continue
        if line.startswith((".\\\"", "'\\\"", '.\\"', "\\\"")) or line.strip() in (".", "'"):
            continue
        if line.startswith((".", "'")):
            macro, _, args = line[1:].strip().partition(" ")
            if macro in GROFF_TEXT_MACROS and args:
                if macro in ("SH", "SS", "Sh", "Ss"):
                    lines.append("")
                lines.append(groff_inline(args.replace('"', "")))
            elif macro in ("PP", "LP", "P", "sp", "TP", "Pp"):
                lines.append("")
            continue  # .TH, .so, .nf, .RS, .de … carry no prose
        lines.append(groff_inline(line))
    return "\n".join(lines)


RST_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+.:_])\1{2,}\s*$")


def rst_to_text(raw):
    lines = []
    for line in raw.splitlines():
        if RST_UNDERLINE.match(line) or line.lstrip().startswith(".. "):
            continue
        line = re.sub(r":[\w:-]+:`([^`<]*?)\s*(<[^>]*>)?`", r"\1", line)  # :role:`text <target>`
        lines.append(re.sub(r"`+|\*\*|\|(\w+)\|", lambda m: m.group(1) or "", line))
    return "\n".join(lines)


def pod_to_text(raw):
    lines = []
    for line in raw.splitlines():
        if line.startswith("="):
            cmd, _, args = line.partition(" ")
            if cmd.startswith(("=head", "=item")):
                lines += ["", args]
            continue
        lines.append(line)
    text = "\n".join(lines)
    for _ in range(3):  # nested B<C<...>>
        text = re.sub(r"[A-Z]<<+\s*(.*?)\s*>>+|[A-Z]<([^<>]*)>", lambda m: m.group(1) or m.group(2) or "", text)
    return text


def html_to_text(raw):
    raw = re.sub(r"(?is)<(head|script|style)\b.*?</\1>", "", raw)
    raw = re.sub(r"(?i)<br\s*/?>|</(p|div|h\d|li|tr|pre|dt|dd|table|title)>", "\n", raw)
    text = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    return "\n".join(re.sub(r"[ \t\r\xa0]+", " ", line).strip() for line in text.splitlines())


def tidy(text):
    """Trim lines, keep at most one empty line between paragraphs."""
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_long(text):
    """Parts of at most MAX_DOC characters, cut at paragraph boundaries."""
    parts, cur, size = [], [], 0
    for para in text.split("\n\n"):
        if cur and size + len(para) > MAX_DOC:
            parts.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(para[:MAX_DOC])
        size += len(para) + 2
    if cur:
        parts.append("\n\n".join(cur))
    return parts


# --- reading the packages --------------------------------------------------------------------

# A language folder: /de/, /zh_CN/, /pt-BR/ …
LANG_IN_PATH = re.compile(r"/([a-z]{2})(?:[-_][A-Za-z]{2})?/")
LANGS = {"zh", "ja", "ko", "de", "fr", "ru", "es", "pl", "pt", "it", "nl", "en", "ar", "ca", "cs", "da", "el", "fa",
         "fi", "hr", "hu", "id", "nb", "ro", "sv", "tr", "uk", "vi", "he"}


def language(pkg, path):
    for m in LANG_IN_PATH.finditer(path):
        if m.group(1) in LANGS:
            return m.group(1)
    m = re.search(r"-(zh|de|fr|ru|es|pl|ja|pt)(-\w+)?$", pkg)
    return m.group(1) if m else "en"


def read(path):
    raw = open(path, "rb").read()
    if path.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except Exception:
            return None
    return raw.decode("utf-8", errors="replace")


def source_documents():
    """(package, path, lang, text) for every document, in a fixed order."""
    for pkg in sorted(os.listdir(src)):
        for root, dirs, files in os.walk(os.path.join(src, pkg)):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                base = name[:-3] if name.endswith(".gz") else name
                if "/man/" in path and re.search(r"\.\d\w*$", base):
                    convert = groff_to_text
                elif base.endswith((".rst", ".rst.txt")) or (pkg.startswith("linux-doc") and base.endswith(".txt")):
                    convert = rst_to_text
                elif base.endswith(".pod"):
                    convert = pod_to_text
                elif base.endswith(".html") and "/_sources/" not in path and not pkg.startswith(("python", "linux-doc")):
                    convert = html_to_text  # python and linux html duplicate their rst sources
                else:
                    continue
                raw = read(path)
                if raw is None:
                    continue
                text = tidy(convert(raw))
                rel = os.path.relpath(path, os.path.join(src, pkg))
                if (pkg.startswith("linux-doc") and "/_sources/" in path) or (pkg == "perl-doc" and "/man/" in path):
                    continue  # copies of the kernel's rst files and of perl's POD
                for i, part in enumerate(split_long(text)):
                    if len(part) >= MIN_DOC:
                        yield pkg, f"{rel}#{i}", language(pkg, "/" + rel), part


# --- the shingle definition (for the recorded true Jaccard), as pipeline/src/normalize.rs -

def is_unspaced(c):
    o = ord(c)
    return (0x0E00 <= o <= 0x0EFF or 0x1000 <= o <= 0x109F or 0x1780 <= o <= 0x17FF or 0x3040 <= o <= 0x30FF
            or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F)


def normalize(text):
    out = []
    for c in unicodedata.normalize("NFKC", text).lower():
        for d in (unicodedata.normalize("NFD", c) if 0xC0 <= ord(c) < 0x3000 else c):
            if d.isalnum():
                out.append("0" if unicodedata.category(d) in ("Nd", "Nl", "No") else d)
            elif unicodedata.category(d) != "Mn":
                out.append(" " if d not in ".," else d)
    # A number (digits, optionally one "." or "," and more digits) is one 0; other "." "," are spaces.
    text = re.sub(r"0+(?:[.,]0+)?", "0", "".join(out))
    return " ".join(re.sub(r"[.,]", " ", text).split())


def shingles(text, n=5):
    toks = []
    for word in normalize(text).split():
        run = ""
        for c in word:
            if is_unspaced(c):
                if run:
                    toks.append((run, 2))
                    run = ""
                toks.append((c, 1))
            else:
                run += c
        if run:
            toks.append((run, 2))
    if not toks:
        return set()
    out, end, weight = set(), 0, 0
    for start in range(len(toks)):
        while end < len(toks) and weight < 2 * n:
            weight += toks[end][1]
            end += 1
        if weight < 2 * n and start > 0:
            break
        out.add(xxhash.xxh3_64_intdigest("\x00".join(t for t, _ in toks[start:end])))
        weight -= toks[start][1]
    return out


def jaccard(a, b):
    a, b = shingles(a), shingles(b)
    return len(a & b) / max(len(a | b), 1)


def is_cjk(text):
    letters = [c for c in text[:2000] if c.isalpha()]
    return sum(map(is_unspaced, letters)) > 0.3 * max(len(letters), 1)


# --- web-like edits ----------------------------------------------------------------------------

HEADERS = ["Home | Docs | Downloads | Community | Search", "Skip to main content", "Menu  Sign in  Register",
           "You are here: Home » Documentation » Reference", "首页 | 文档 | 下载 | 社区 | 搜索",
           "Startseite | Dokumentation | Suche", "Accueil | Documentation | Recherche"]
FOOTERS = ["© {y} Mirror Archive. All rights reserved. Privacy Policy · Terms of Use · Contact",
           "Last updated on {d}. Found a typo? Edit this page on GitHub.", "Copyright {y}, the authors. Built with Sphinx.",
           "Share this page: Twitter Facebook LinkedIn Email", "版权所有 © {y} 镜像站 保留所有权利 | 隐私政策 | 联系我们",
           "Impressum | Datenschutz | Kontakt © {y}", "Cette page a été modifiée pour la dernière fois le {d}."]


def web_edit(text, lang_pages):
    """A near copy of text with 1–3 random edits; returns (text, [edit names])."""
    names = rng.sample(["boilerplate", "numbers", "paragraph_added", "paragraph_removed", "words", "truncated"],
                       rng.choice([1, 1, 2, 2, 3]))
    paras, cjk = text.split("\n\n"), is_cjk(text)
    for name in names:
        if name == "paragraph_added":
            other = rng.choice(lang_pages).split("\n\n")
            paras.insert(rng.randrange(len(paras) + 1), rng.choice(other))
        elif name == "paragraph_removed" and len(paras) > 2:
            del paras[rng.randrange(len(paras))]
        elif name == "truncated" and len(paras) > 2:
            paras = paras[:max(1, round(len(paras) * rng.uniform(0.6, 0.95)))]
        elif name == "words":
            # Words are space-separated, except in Chinese/Japanese: there, 2-character pieces.
            text = "\n\n".join(paras)
            if cjk:
                words = [text[i:i + 2] for i in range(0, len(text), 2)]
            else:
                words = text.split(" ")
            for _ in range(max(1, int(len(words) * rng.uniform(0.005, 0.03)))):
                i = rng.randrange(len(words))
                op = rng.randrange(3)
                if op == 0:
                    words[i] = rng.choice(words)
                elif op == 1 and len(words) > 1:
                    del words[i]
                else:
                    words.insert(i, rng.choice(words))
            paras = ("" if cjk else " ").join(words).split("\n\n")
    text = "\n\n".join(paras)
    if "numbers" in names:
        text = re.sub(r"\d+", lambda m: str(rng.randrange(10 ** len(m.group()))) if rng.random() < 0.5 else m.group(), text)
    if "boilerplate" in names:
        year, date = rng.randrange(2015, 2025), f"{rng.randrange(2015, 2025)}-{rng.randrange(1, 13):02}-{rng.randrange(1, 29):02}"
        text = f"{rng.choice(HEADERS)}\n\n{text}\n\n{rng.choice(FOOTERS).format(y=year, d=date)}"
    return text, names


# --- assembling the dumps ----------------------------------------------------------------------

def main():
    # The packages repeat themselves (an untranslated Debian Handbook section is the English one
    # in every language folder, one man page ships in two packages): keep the first of each
    # normalized text, so that the injected exact copies are the only exact duplicates. Natural
    # near duplicates (partial translations, sibling man pages) stay, as on the web.
    docs, seen = [], set()
    for doc in source_documents():
        key = xxhash.xxh3_128_intdigest(normalize(doc[3]))
        if key not in seen:
            seen.add(key)
            docs.append(doc)
    print(f"extracted {len(docs)} distinct documents, {sum(len(d[3].encode()) for d in docs) / 1e6:.1f} MB of text",
          flush=True)
    rng.shuffle(docs)
    by_lang = {}
    for pkg, _, lang, text in docs:
        by_lang.setdefault(lang, []).append(text)

    records, truth, size = [], [], 0

    def add(dump, pkg, rel, lang, text, kind, dup_of=None, jac=None, edits=None):
        nonlocal size
        id_ = f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>"
        url = f"https://{pkg}.example.org/{rel.split('#')[0]}" if kind != "near_dup" else \
            f"https://mirror{rng.randrange(100)}.example.net/{pkg}/{rel.split('#')[0]}"
        records.append((dump, id_, text, url, lang))
        truth.append({"id": id_, "kind": kind, "dup_of": dup_of, "jaccard": jac, "lang": lang,
                      "cjk": is_cjk(text), "edits": edits})
        size += len(text.encode())
        return id_

    for pkg, rel, lang, text in docs:
        if size >= mb * 1e6:
            break
        home = rng.randrange(len(DUMPS))
        orig = add(DUMPS[home], pkg, rel, lang, text, "original")
        if rng.random() < P_EXACT:
            for dump in rng.sample(DUMPS, rng.choice([1, 1, 2])):
                add(dump, pkg, rel, lang, text, "exact_dup", orig, 1.0)
        if rng.random() < P_NEAR:
            for dump in rng.sample(DUMPS, rng.choice([1, 1, 2])):
                near, edits = web_edit(text, by_lang[lang])
                add(dump, pkg, rel, lang, near, "near_dup", orig, round(jaccard(text, near), 4), edits)
    if size < mb * 1e6:
        print(f"warning: the packages hold only {size / 1e6:.1f} MB with duplicates, less than {mb} MB")

    records.sort(key=lambda r: (r[0], r[1]))
    os.makedirs(os.path.join(out, "input"), exist_ok=True)
    per = (len(records) + SHARDS - 1) // SHARDS
    for s in range(SHARDS):
        with gzip.open(os.path.join(out, "input", f"shard-{s:02}.jsonl.gz"), "wt", compresslevel=1) as f:
            for dump, id_, text, url, lang in records[s * per:(s + 1) * per]:
                f.write(json.dumps({"id": id_, "text": text, "url": url, "source": dump, "lang": lang},
                                   ensure_ascii=False) + "\n")
    with open(os.path.join(out, "truth.jsonl"), "w") as f:
        for t in truth:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    kinds = {k: sum(t["kind"] == k for t in truth) for k in ("original", "exact_dup", "near_dup")}
    print(f"prepared {len(records)} documents ({kinds}), {size / 1e6:.1f} MB of text, "
          f"{sum(t['cjk'] for t in truth)} mostly Chinese/Japanese, in {SHARDS} shards")


main()
