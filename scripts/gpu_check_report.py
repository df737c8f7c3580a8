"""Summary of a scripts/gpu-check run: reads the steps' outputs in WORK, writes OUT/results.json
and OUT/gpu-check.md (also printed), with the issue's targets marked met or missed.

    python3 scripts/gpu_check_report.py WORK OUT DEVICE MODEL STEPS
"""
import json
import statistics
import sys
from pathlib import Path

work, out, device, model, steps = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:6]
RUNS = ["bf16", "bf16-loop", "fp8-native", "fp8-emulated"]
CHECKS = ["fp8-gemm", "experts", "attention", "nccl"]


def read(name, suffix):
    path = work / f"{name}.{suffix}"
    return path.read_text(errors="replace") if path.exists() else ""


def parse_json(text):
    """The JSON value(s) a step printed: one pretty object, or one object per line."""
    try:
        return json.loads(text)
    except ValueError:
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
        return rows or None


def metrics(name):
    path = work / name / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tail_mean(values, frac=0.1):
    tail = values[-max(5, int(len(values) * frac)):]
    return sum(tail) / len(tail) if tail else None


steps_status = {}
for line in read("results", "jsonl").splitlines():
    row = json.loads(line)
    steps_status[row["step"]] = row

runs = {}
for name in RUNS:
    rows = metrics(name)
    losses = [r["main_loss"] for r in rows]
    speeds = [r["tokens_per_second"] for r in rows[1:]] or [r["tokens_per_second"] for r in rows]
    summary = parse_json(read(name, "out"))
    notes = [l for l in read(name, "err").splitlines() if l.startswith(("mfu:", "fp8", "error"))]
    runs[name] = {
        "exit": steps_status.get(name, {}).get("exit"),
        "steps": len(rows),
        "first_loss": sum(losses[:5]) / len(losses[:5]) if losses else None,
        "tail_loss": tail_mean(losses),
        "losses": losses,
        "median_tokens_per_second": statistics.median(speeds) if speeds else None,
        "mfu": (summary or {}).get("mfu") if isinstance(summary, dict) else None,
        "gpu_memory": (summary or {}).get("gpu_memory") if isinstance(summary, dict) else None,
        "profile": (summary or {}).get("profile") if isinstance(summary, dict) else None,
        "notes": notes,
    }
    if runs[name]["mfu"] is None and rows and rows[0].get("mfu") is not None:
        runs[name]["mfu"] = statistics.median(r["mfu"] for r in rows)

checks = {name: parse_json(read(name, "out")) for name in CHECKS}
generate = parse_json(read("generate", "out"))
results = {
    "device": device, "model": model, "steps": int(steps),
    "status": steps_status, "runs": runs, "checks": checks, "generate": generate,
    "info": read("info", "out"),
}
(out / "results.json").write_text(json.dumps(results, indent=1))


def fmt(v, spec="{:.4f}"):
    return "—" if v is None else spec.format(v)


def verdict(ok):
    return "—" if ok is None else ("met" if ok else "MISSED")


lines = [f"# GPU check: {model}, {steps} steps, device {device}", ""]
gpu = [l for l in read("info", "out").splitlines() if l.startswith("device ")]
lines += [f"- {gpu[0] if gpu else 'device: see steps.log (info step)'}"]
lines += [f"- {l}" for l in read("info", "out").splitlines() if l.startswith(("commit", "torch "))]
lines += ["", "## Steps", "", "| step | exit | seconds |", "|---|---|---|"]
for name, row in steps_status.items():
    lines.append(f"| {name} | {row['exit']}{' (timeout)' if row['exit'] in (124, 137) else ''} | {row['seconds']} |")

lines += ["", "## Training runs", "",
          "| run | steps | main loss first → tail | median tokens/s | MFU | peak GPU memory (allocated) |",
          "|---|---|---|---|---|---|"]
for name, r in runs.items():
    mem = r["gpu_memory"]
    mem = f"{mem['allocated_bytes'] / 2**30:.2f} GiB" if mem else "—"
    lines.append(f"| {name} | {r['steps']} | {fmt(r['first_loss'])} → {fmt(r['tail_loss'])} | "
                 f"{fmt(r['median_tokens_per_second'], '{:.0f}')} | {fmt(r['mfu'] and 100 * r['mfu'], '{:.1f}%')} | {mem} |")
for name, r in runs.items():
    lines += [f"- {name}: {n}" for n in r["notes"]]

for name, r in runs.items():
    if not r["profile"]:
        continue
    p, s = r["profile"], r["profile"]["summary"]
    busy = fmt(s["gpu_busy"] and 100 * s["gpu_busy"], "{:.1f}%")
    lines += ["", f"## Profile of {name}, steps {p['steps']['first']}-{p['steps']['last']} "
              f"(all tables: profile-{name}.md; trace: profile-{name}.json.gz)", "",
              f"- {s['step_ms']:.1f} ms per step, GPU busy {busy}, "
              f"{s['host_reads_per_step']:.1f} device reads per step by whale's code, "
              f"{fmt(s['syncs_per_step'], '{:.1f}')} CUDA synchronizations per step, "
              f"{fmt(s['gpu_ops_per_step'], '{:.0f}')} GPU kernels/copies per step averaging "
              f"{fmt(s['gpu_op_mean_us'], '{:.1f}')} µs", "",
              "| GPU time by kind (or CPU operator) | ms per step | share of step |", "|---|---|---|"]
    for t in (s["gpu_kinds"] or s["cpu_ops"][:8]) + s["gpu_kernels"][:6]:
        lines.append(f"| {t['name'][:90]} | {t['ms_per_step']:.2f} | {100 * t['share']:.1f}% |")

bf16, native, emulated, loop = (runs[n] for n in ["bf16", "fp8-native", "fp8-emulated", "bf16-loop"])
if not bf16["steps"]:  # the grouped experts failed and the loop's full run stood in
    bf16 = loop


def ratio(a, b):
    return a / b if a is not None and b else None


def rel(a, b):
    return abs(a - b) / b if a is not None and b else None


falls = bf16["tail_loss"] < 0.7 * bf16["first_loss"] if bf16["tail_loss"] and bf16["first_loss"] else None
common = min(native["steps"], bf16["steps"])  # a run cut short by its timeout compares its prefix
fp8_loss = rel(tail_mean(native["losses"][:common]), tail_mean(bf16["losses"][:common])) if common else None
fp8_speed = ratio(native["median_tokens_per_second"], bf16["median_tokens_per_second"])
pairs = list(zip(native["losses"], emulated["losses"]))
curve = max((abs(a - b) / b for a, b in pairs), default=None)
gemm = checks["fp8-gemm"] if isinstance(checks["fp8-gemm"], dict) else {}
gnative = gemm.get("native", {})
experts = checks["experts"] if isinstance(checks["experts"], dict) else {}
attention = checks["attention"] if isinstance(checks["attention"], dict) else {}
nccl = checks["nccl"] if isinstance(checks["nccl"], dict) else {}
mfu = bf16["mfu"]
lines += ["", "## Targets (issue 17)", "", "| target | measured | |", "|---|---|---|",
          f"| bf16 loss falls | {fmt(bf16['first_loss'])} → {fmt(bf16['tail_loss'])} | {verdict(falls)} |",
          f"| bf16 MFU ≥ 40% | {fmt(mfu and 100 * mfu, '{:.1f}%')} | {verdict(None if mfu is None else mfu >= 0.4)} |",
          f"| fp8 native ≥ 1.3× bf16 tokens/s (whole step) | {fmt(fp8_speed, '{:.2f}×')} | {verdict(None if fp8_speed is None else fp8_speed >= 1.3)} |",
          f"| fp8 native GEMM ≥ 1.3× bf16 GEMM ({gemm.get('shape')}) | {fmt(gnative.get('speedup_vs_bf16'), '{:.2f}×')} | {verdict(None if 'speedup_vs_bf16' not in gnative else gnative['speedup_vs_bf16'] >= 1.3)} |",
          f"| fp8 native loss within 0.5% of bf16 (tail mean over the first {common} steps) | {fmt(fp8_loss and 100 * fp8_loss, '{:.3f}%')} | {verdict(None if fp8_loss is None else fp8_loss <= 0.005)} |",
          f"| native vs emulated GEMM within E4M3 rounding | {fmt(gnative.get('rel_err_vs_emulated'), '{:.2e}')} (E4M3 itself: {fmt(gemm.get('emulated_rel_err_vs_fp32'), '{:.2e}')}) | {verdict(None if 'rel_err_vs_emulated' not in gnative else gnative['rel_err_vs_emulated'] < 0.1 * gemm['emulated_rel_err_vs_fp32'])} |",
          f"| native vs emulated loss curves (max step difference) | {fmt(curve and 100 * curve, '{:.3f}%')} over {len(pairs)} steps | |",
          f"| grouped experts = loop (outputs / gradients, rel.) | {fmt(experts.get('output_rel_err'), '{:.2e}')} / {fmt(experts.get('grad_rel_err'), '{:.2e}')} | {verdict(None if not experts else experts['output_rel_err'] < 2e-2 and experts['grad_rel_err'] < 2e-2)} |",
          f"| grouped experts speed (layer fwd+bwd / whole step) | {fmt(experts.get('grouped_speedup'), '{:.2f}×')} / {fmt(ratio(bf16['median_tokens_per_second'], loop['median_tokens_per_second']), '{:.2f}×')} | |",
          f"| MLA attention, values padded = as they are (outputs / gradients, rel.) | {fmt(attention.get('padded_output_rel_err'), '{:.2e}')} / {fmt(attention.get('padded_grad_rel_err'), '{:.2e}')} | {verdict(None if not attention else attention['padded_output_rel_err'] < 2e-2 and attention['padded_grad_rel_err'] < 2e-2)} |",
          f"| MLA attention kernel, as they are → padded (fwd+bwd speedup; training pads?) | {attention.get('backend', '—')} → {attention.get('padded_backend', '—')} ({fmt(attention.get('padded_speedup'), '{:.2f}×')}; {attention.get('training_pads', '—')}) | {verdict(None if not attention else attention['training_pads'] == (attention['padded_speedup'] > 1))} |",
          f"| one-rank {nccl.get('backend', 'NCCL')} group: collectives + ZeRO-0 (blocks recomputed) and ZeRO-1 steps | {nccl.get('collectives', '—')}; last loss {fmt(nccl['main_losses'][-1]) if nccl.get('main_losses') else '—'}, largest relative difference from one process {fmt(nccl['max_rel_diff'], '{:.1e}') if 'max_rel_diff' in nccl else '—'} | {verdict(bool(nccl) if steps_status.get('nccl') else None)} |",
          ]
lines += [f"- {l}" for l in read("nccl", "err").splitlines() if l.startswith("process-group:")]
lines += ["", "## Generation (BF16 checkpoint; greedy, then MTP speculative)", ""]
lines += [f"- {l}" for l in read("generate", "err").splitlines() if l.startswith("generate:")]
report = "\n".join(lines) + "\n"
(out / "gpu-check.md").write_text(report)
print(report)
