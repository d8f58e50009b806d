#!/usr/bin/env python3
"""zero_report.py: bench/zero.sh's table from the JSON lines of weft_zero / torch_zero.py on
stdin (median over rounds of each statistic; per-rank figures per rank)."""
import json
import statistics
import sys


def main():
    warning = sys.argv[1] if len(sys.argv) > 1 else ""
    rows = {}
    for line in sys.stdin:
        d = json.loads(line)
        rows.setdefault((d["impl"], d["mode"]), []).append(d)
    if warning:
        print(f"**WARNING: {warning}**\n")
    first = next(iter(rows.values()))
    f = first[0]
    print(f"ZeRO, {f['workload']}, Adam, world {f['world']}, batch {f['batch']} per rank, "
          f"1 thread per rank, {f['steps']} timed steps, median over {len(first)} round(s)\n")
    print("| impl | optimizer | step ms (median) | p10 | p90 | peak RSS MB per rank "
          "| optimizer state MB per rank |")
    print("|---|---|---|---|---|---|---|")

    def med(ds, k):
        return statistics.median(d[k] for d in ds)

    def per_rank(ds, k):
        n = len(ds[0][k])
        return " / ".join(f"{statistics.median(d[k][i] for d in ds):.0f}" for i in range(n))

    for (impl, mode), ds in sorted(rows.items()):
        print(f"| {impl} | {mode} | {med(ds, 'median_ms'):.1f} | {med(ds, 'p10_ms'):.1f} | "
              f"{med(ds, 'p90_ms'):.1f} | {per_rank(ds, 'peak_rss_mb')} | "
              f"{per_rank(ds, 'optim_state_mb')} |")


if __name__ == "__main__":
    main()
