#!/usr/bin/env python3
"""ddp_report.py: bench/ddp.sh's tables, from the JSON lines of weft_ddp/torch_ddp.py and
weft_allreduce/torch_allreduce.py on stdin (any number of rounds: each figure is the median
over the rounds). Prints markdown: the DDP step per workload and world with weft/PyTorch and
scaling efficiency, the share of the all-reduce hidden behind backward, the raw all-reduce.
"""
import argparse
import json
import statistics
import sys


# weft's rows: as it runs by default, and with WEFT_SHM=0 (the Gloo group's all-reduce without
# its shared-memory path), labelled in the tables' first column.
# Rows with a communication hook (bench/weft_ddp --hook) are "weft+HOOK".
# "weft-apart" is N world-1 runs at once, no DDP: the machine's own ceiling on scaling.
WEFT_IMPLS = (("weft", ""), ("weft-noshm", ", WEFT_SHM=0"), ("weft+bf16", ", bf16_compress_hook"),
              ("weft+powersgd", ", PowerSGD rank 1"), ("weft-apart", ", N world-1 runs at once"))


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def collect(lines):
    """{(bench, impl, workload_or_bytes, world): {field: [value per round]}}, rounds in order"""
    runs = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        what = d.get("bench", "ddp")
        impl = d["impl"] + ("+" + d["hook"] if d.get("hook", "none") != "none" else "")
        key = (what, impl, d["bytes"] if what == "allreduce" else d["workload"], d["world"])
        fields = runs.setdefault(key, {})
        for k, v in d.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                fields.setdefault(k, []).append(v)
    return runs


def medians(raw):
    return {k: {f: statistics.median(v) for f, v in fs.items()} for k, fs in raw.items()}


def per_round_scaling(raw, key, one_key):
    """Median over rounds of (world-1 step / world-N step) within each round: both taken minutes
    apart at most, so a slow phase of the machine in one round does not pair with a fast one."""
    r, one = raw.get(key), raw.get(one_key)
    if not r or not one:
        return None
    return statistics.median(a / b for a, b in zip(one["median_ms"], r["median_ms"]))


def hidden_share(r):
    """1 - (ddp - nosync) / allreduce on the round medians, clamped to [0, 1]."""
    if r is None or r["world"] == 1 or r["allreduce_ms"] <= 0:
        return None
    return min(1.0, max(0.0, 1.0 - (r["median_ms"] - r["nosync_ms"]) / r["allreduce_ms"]))


def step_table(runs, raw):
    cells = sorted({(k[2], k[3]) for k in runs if k[0] == "ddp"},
                   key=lambda c: (["linear", "convbn", "mlp25m"].index(c[0]), c[1]))
    print("| workload | world | weft ms | torch ms | weft/torch | weft scaling | torch scaling "
          "| weft scaling per round |")
    print("|---|---|---|---|---|---|---|---|")
    for w, n in cells:
        tc = runs.get(("ddp", "torch", w, n))
        for impl, label in WEFT_IMPLS:
            wf = runs.get(("ddp", impl, w, n))
            if wf is None and impl != "weft":
                continue
            row = [w + label, str(n)]
            t = None if impl == "weft-apart" else tc  # not a DDP step: no PyTorch to set beside
            row += [fmt(r and r["median_ms"], ".3f") for r in (wf, t)]
            row.append(fmt(wf and t and wf["median_ms"] / t["median_ms"], ".3f"))
            # World 1 has no all-reduce: weft's own row is the baseline of both weft rows.
            for r, one in ((wf, runs.get(("ddp", "weft", w, 1))),
                           (t, runs.get(("ddp", "torch", w, 1)))):
                row.append(fmt(r and one and one["median_ms"] / r["median_ms"], ".2f"))
            row.append(fmt(per_round_scaling(raw, ("ddp", impl, w, n), ("ddp", "weft", w, 1)), ".2f"))
            print("| " + " | ".join(row) + " |")
    return cells


def hidden_table(runs, cells):
    print("| workload | world | impl | step ms | no_sync ms | exposed ms | all-reduce alone ms "
          "| hidden share | buckets | grad MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w, n in cells:
        if n == 1:
            continue
        for impl in [i for i, _ in WEFT_IMPLS if i != "weft-apart"] + ["torch"]:
            r = runs.get(("ddp", impl, w, n))
            if r is None:
                continue
            row = [w, str(n), impl] + [f"{r[f]:.3f}" for f in ("median_ms", "nosync_ms")]
            row += [f"{r['median_ms'] - r['nosync_ms']:.3f}", f"{r['allreduce_ms']:.3f}",
                    fmt(hidden_share(r), ".2f"), f"{r['buckets']:.0f}", f"{r['grad_mb']:.2f}"]
            print("| " + " | ".join(row) + " |")


def allreduce_table(runs):
    sizes = sorted({(k[2], k[3]) for k in runs if k[0] == "allreduce"}, reverse=True)
    print("| size | world | weft ms | torch ms | weft/torch | weft GB/s | torch GB/s |")
    print("|---|---|---|---|---|---|---|")
    for b, n in sizes:
        tc = runs.get(("allreduce", "torch", b, n))
        size = f"{b / 1e6:.0f} MB" if b >= 1e6 else f"{b / 1e3:.0f} KB"
        for impl, label in WEFT_IMPLS:
            wf = runs.get(("allreduce", impl, b, n))
            if wf is None and impl != "weft":
                continue
            row = [size + label, str(n)] + [fmt(r and r["median_ms"], ".3f") for r in (wf, tc)]
            row.append(fmt(wf and tc and wf["median_ms"] / tc["median_ms"], ".3f"))
            row += [fmt(r and r["bytes"] / (r["median_ms"] * 1e6), ".2f") for r in (wf, tc)]
            print("| " + " | ".join(row) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="?")
    ap.add_argument("--rounds", default="1")
    ap.add_argument("--iters", default="?")
    ap.add_argument("--warning", default="")
    a = ap.parse_args()
    raw = collect(sys.stdin)
    runs = medians(raw)
    if a.warning:
        bar = "!" * 100
        print(f"{bar}\n!! WARNING: {a.warning}.\n!! These timings are NOT worth much: "
              f"rerun on a quiet machine.\n{bar}\n")
    print(f"DDP step, gloo, 1 thread per rank, fixed per-rank batch ({a.steps} steps, median; "
          f"median of {a.rounds} round(s)); torch = PyTorch with glibc keeping memory;")
    print("weft/torch: lower is better; scaling = world-1 step / world-N step (1.00 is perfect); "
          "rows \"WEFT_SHM=0\": weft's Gloo all-reduce without its shared-memory path; rows "
          "\"N world-1 runs at once\": no DDP, the machine's own ceiling on scaling; scaling per "
          "round = the median over rounds of each round's own world-1 / world-N")
    print()
    cells = step_table(runs, raw)
    print()
    print("Share of the gradient all-reduce hidden behind backward (world > 1): exposed = step - "
          "no_sync step; hidden = 1 - exposed / all-reduce alone, clamped to [0, 1]")
    print()
    hidden_table(runs, cells)
    if any(k[0] == "allreduce" for k in runs):
        print()
        print(f"Raw all-reduce (SUM, float32, one tensor; {a.iters} iterations, median; "
              "GB/s = bytes / median time)")
        print()
        allreduce_table(runs)


if __name__ == "__main__":
    main()
