"""Run whale and datatrove MinHash dedup on the same shards and compare speed, memory, results.

    run.py DEDUP_EXAMPLE WORK CORES TRUTH_JSONL

TRUTH_JSONL has one line per document: id, kind (original / exact_dup / near_dup / other kinds,
which are ignored), dup_of; optionally jaccard (true similarity of a near copy to its original)
and cjk (mostly Chinese/Japanese text), which add the per-script and per-similarity breakdowns.
"""

import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq

dedup, work, cores, truth_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
inp = os.path.join(work, "input")
pin = ["taskset", "-c", f"0-{cores - 1}"] if shutil.which("taskset") else []


def measure(cmd):
    """Wall seconds and peak RSS (MiB, largest process of the run) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(pin + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.decode(errors='replace')[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out.decode(errors="replace")


# Characters of Chinese/Japanese (kana, CJK ideographs): datatrove's English word tokenizer keeps a
# run of them as one token, whale shingles them as character windows.
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
ids, text_bytes, has_cjk = [], 0, set()
for path in sorted(glob.glob(os.path.join(inp, "*.jsonl.gz"))):
    with gzip.open(path, "rt") as f:
        for line in f:
            d = json.loads(line)
            ids.append(d["id"])
            text_bytes += len(d["text"].encode())
            if CJK.search(d["text"]):
                has_cjk.add(d["id"])
n = len(ids)

dt_dir = os.path.join(work, "datatrove")
dt_timing = os.path.join(dt_dir, "timing.json")
if os.environ.get("BENCH_REUSE_DATATROVE") and os.path.exists(dt_timing):
    # Only for audits of whale changes: the table then holds datatrove's figures of an earlier run.
    dt_wall, dt_rss = json.load(open(dt_timing))
    print(f"reusing datatrove's run in {dt_dir} ({dt_wall:.1f} s)")
else:
    shutil.rmtree(dt_dir, ignore_errors=True)
    dt_script = os.path.join(os.path.dirname(__file__), "datatrove_minhash.py")
    dt_wall, dt_rss, _ = measure([sys.executable, dt_script, inp, dt_dir, str(cores)])
    with open(dt_timing, "w") as f:
        json.dump([dt_wall, dt_rss], f)
dt_removed, dt_cluster = set(), {}
for kind in ("removed", "output"):
    for path in glob.glob(os.path.join(dt_dir, kind, "*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            for line in f:
                d = json.loads(line)
                if kind == "removed":
                    dt_removed.add(d["id"])
                if d.get("metadata", {}).get("minhash_cluster_id", -1) != -1:
                    dt_cluster[d["id"]] = d["metadata"]["minhash_cluster_id"]
# datatrove's clusters with whale's keep rule (the first document in input order, i.e. oldest
# dump, then smallest id): separates "found different duplicates" from "kept another copy".
order = {i: k for k, i in enumerate(ids)}
firsts = {}
for i, c in dt_cluster.items():
    if c not in firsts or order[i] < order[firsts[c]]:
        firsts[c] = i
dt_first_kept = {i for i, c in dt_cluster.items() if firsts[c] != i}



def run_whale(name, *flags):
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    wall, rss, log = measure([dedup, inp, out, str(cores), *flags])
    table = pq.read_table(os.path.join(out, "_removed.parquet"), columns=["id"])
    return wall, rss, set(table.column("id").to_pylist()), log


wh_wall, wh_rss, wh_removed, wh_out = run_whale("whale")
wv_wall, wv_rss, wv_removed, _ = run_whale("whale-verify", "--verify")
# The noise floor of MinHash-LSH itself: whale again with other permutations (another seed).
_, _, ws_removed, _ = run_whale("whale-seed1", "--seed=1")
# datatrove's own definition and keep rule in whale (`--scheme=datatrove`); datatrove does no exact
# dedup, so neither does this run. datatrove ran one task per shard, so its (task, document) order
# is whale's input order, which the keep rule (the root of its union by size) depends on.
wd_wall, wd_rss, wd_removed, _ = run_whale("whale-dt", "--scheme=datatrove", "--no-exact")
with open(os.path.join(work, "removed-sets.json"), "w") as f:  # for audits of the disagreements
    json.dump({"datatrove": sorted(dt_removed), "datatrove_first_kept": sorted(dt_first_kept),
               "whale": sorted(wh_removed), "whale_verify": sorted(wv_removed),
               "whale_seed1": sorted(ws_removed), "whale_scheme_datatrove": sorted(wd_removed)}, f)
mb = text_bytes / 1e6
print(f"\ninput: {n} documents, {mb:.1f} MB of text, {cores} core(s)\n")
print(f"| tool | wall s | docs/s/core | MB/s/core | peak RSS MiB | removed |")
print(f"|---|---:|---:|---:|---:|---:|")
runs = [
    ("datatrove", dt_wall, dt_rss, dt_removed),
    ("whale", wh_wall, wh_rss, wh_removed),
    ("whale --verify", wv_wall, wv_rss, wv_removed),
    ("whale --scheme=datatrove", wd_wall, wd_rss, wd_removed),
]
for name, wall, rss, removed in runs:
    print(f"| {name} | {wall:.1f} | {n / wall / cores:,.0f} | {mb / wall / cores:.2f} | {rss:,.0f} | {len(removed)} |")
print(f"\nspeed-up per core: {dt_wall / wh_wall:.1f}x; peak RSS ratio whale/datatrove: {wh_rss / dt_rss:.2f}")
print(f"--scheme=datatrove: speed-up per core {dt_wall / wd_wall:.1f}x; peak RSS ratio {wd_rss / dt_rss:.2f}")
for dt_name, dt in (("datatrove", dt_removed), ("datatrove clusters, first kept", dt_first_kept)):
    for name, _, _, removed in runs[1:]:
        both, union = len(dt & removed), len(dt | removed)
        print(f"removed-set agreement {dt_name} vs {name} (|A∩B| / |A∪B|): {both / max(union, 1):.4f}; "
              f"only datatrove: {len(dt - removed)}, only {name}: {len(removed - dt)}")
both, union = len(wh_removed & ws_removed), len(wh_removed | ws_removed)
print(f"removed-set agreement whale vs whale with other hash permutations (--seed=1): {both / max(union, 1):.4f}; "
      f"only seed 0: {len(wh_removed - ws_removed)}, only seed 1: {len(ws_removed - wh_removed)}")

# Ground truth: a page group is an original and its exact/near copies (junk pages are ignored).
group, truth = {}, {}
with open(truth_path) as f:
    for line in f:
        t = json.loads(line)
        truth[t["id"]] = t
        if t.get("kind") == "original":
            group[t["id"]] = t["id"]
        elif t.get("kind") in ("exact_dup", "near_dup"):
            group[t["id"]] = t["dup_of"]
present = [i for i in ids if i in group]
members = {}
for i in present:
    members.setdefault(group[i], []).append(i)
# Precision: a removal is right when a copy of the same page (its ground-truth group) is kept.
# A removal without one is a page lost: a false positive, or (in the real corpus) a natural near
# duplicate of another page that the ground truth does not know.
print("\n| tool | dup recall | precision | pages lost (all copies removed) |")
print("|---|---:|---:|---:|")
for name, _, _, removed in runs:
    dups = [i for i in present if group[i] != i]
    found = sum(1 for i in dups if i in removed or group[i] in removed)
    lost = sum(1 for g, m in members.items() if all(i in removed for i in m))
    right = sum(1 for i in removed if i in group and not all(j in removed for j in members[group[i]]))
    print(f"| {name} | {found / max(len(dups), 1):.3f} | {right / max(len(removed), 1):.3f} | {lost} of {len(members)} |")


def sim_bin(i):
    """The true-Jaccard bin of a near copy, or what else a document is in the ground truth."""
    t = truth.get(i, {})
    if t.get("kind") == "near_dup" and t.get("jaccard") is not None:
        lo = min(int(t["jaccard"] * 10), 9) / 10
        return f"near copy, J {lo:.1f}-{lo + 0.1:.1f}"
    if t.get("kind") == "original":
        return "original with copies" if len(members.get(i, [])) > 1 else "unique page"
    return t.get("kind", "not in truth")


if any("cjk" in t for t in truth.values()):
    mostly = {i for i in ids if truth.get(i, {}).get("cjk")}
    scripts = {"mostly Chinese/Japanese": mostly, "some Chinese/Japanese": has_cjk - mostly,
               "no Chinese/Japanese character": set(ids) - has_cjk - mostly}
    # Agreement per script; "first kept": datatrove's clusters with whale's keep rule; the last
    # column is whale against itself with another seed (the noise floor of LSH).
    pairs = [(dt_removed, wh_removed), (dt_removed, wv_removed), (dt_first_kept, wh_removed), (dt_first_kept, wv_removed),
             (wh_removed, ws_removed), (dt_removed, wd_removed)]
    print("\n| docs | n | removed datatrove | removed whale | removed whale --verify | agreement plain "
          "| agreement --verify | plain, first kept | --verify, first kept | whale seed 0 vs 1 "
          "| agreement --scheme=datatrove |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, part in [("all", set(ids)), *scripts.items()]:
        agree = [len(a & b & part) / max(len((a | b) & part), 1) for a, b in pairs]
        print(f"| {label} | {len(part)} | {len(dt_removed & part)} | {len(wh_removed & part)} | {len(wv_removed & part)} | "
              + " | ".join(f"{x:.4f}" for x in agree) + " |")

    # Recall per true-similarity bin: a near copy counts as found when it or its original is removed.
    bins = {}
    for i in present:
        if truth[i]["kind"] in ("exact_dup", "near_dup"):
            bins.setdefault(sim_bin(i), []).append(i)
    print("\n| injected copies | n | recall datatrove | recall whale | recall whale --verify |")
    print("|---|---:|---:|---:|---:|")
    for label in sorted(bins):
        docs = bins[label]
        rec = [sum(1 for i in docs if i in r or group[i] in r) / len(docs) for r in (dt_removed, wh_removed, wv_removed)]
        print(f"| {label} | {len(docs)} | " + " | ".join(f"{x:.3f}" for x in rec) + " |")

    # Detection agreement on the injected copies (a copy is found when it or its original is
    # removed), next to what two MinHash-LSH runs that differ only in their hash functions reach
    # in expectation: a copy at true Jaccard J meets its original in some band with probability
    # p = 1 - (1 - J^8)^14, independently per run, so E|A∩B| / E|A∪B| = Σp² / Σ(2p - p²).
    print("\n| injected copies | n | detection agreement datatrove vs whale | vs whale --verify "
          "| expected for two independent LSH runs |")
    print("|---|---:|---:|---:|---:|")
    for label, part in [("all", set(ids)), *scripts.items()]:
        copies = [i for i in present if i in part and truth[i]["kind"] in ("exact_dup", "near_dup")]
        found = [{i for i in copies if i in r or group[i] in r} for r in (dt_removed, wh_removed, wv_removed)]
        agree = [len(found[0] & f) / max(len(found[0] | f), 1) for f in found[1:]]
        p = [1 - (1 - truth[i]["jaccard"] ** 8) ** 14 for i in copies]
        expected = sum(x * x for x in p) / max(sum(2 * x - x * x for x in p), 1e-9)
        print(f"| {label} | {len(copies)} | {agree[0]:.4f} | {agree[1]:.4f} | {expected:.4f} |")

    for dt_name, dt, name, removed in (("datatrove", dt_removed, "whale", wh_removed),
                                       ("datatrove clusters, first kept", dt_first_kept, "whale", wh_removed),
                                       ("datatrove clusters, first kept", dt_first_kept, "whale --verify", wv_removed)):
        print(f"\nremoved by only one of {dt_name} / {name}, by what the document is:")
        print("\n| document | only datatrove | only whale |\n|---|---:|---:|")
        only_d, only_w = {}, {}
        for i in dt - removed:
            only_d[sim_bin(i)] = only_d.get(sim_bin(i), 0) + 1
        for i in removed - dt:
            only_w[sim_bin(i)] = only_w.get(sim_bin(i), 0) + 1
        for label in sorted(set(only_d) | set(only_w)):
            print(f"| {label} | {only_d.get(label, 0)} | {only_w.get(label, 0)} |")
print("\n" + wh_out.strip().splitlines()[-1])
