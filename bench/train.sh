#!/usr/bin/env bash
# train.sh [--torch-epochs E] [--target ACC] [--force] [-- weft-train options...]
# The main job's time to accuracy: weft-train's default run and PyTorch's usual recipe
# (bench/torch_train.py: the same CNN without dropout, DDP over gloo, SGD 0.05 momentum 0.9,
# weight decay 5e-4, cosine per step, batch 64 per rank) on 2 ranks of this machine, 1 thread
# per rank, both launched by weft-run, one after the other in one run. Prints each side's test
# accuracy and training seconds (evaluation excluded) per epoch, the first epoch that reaches
# ACC (default 0.9125) and the ratio of the two times to it. Refuses a busy machine as
# bench/ddp.sh does unless --force, which runs anyway and warns above the table.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-/usr/bin/python3}"
torch_epochs=3 target=0.9125 force=0 weft_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --torch-epochs) torch_epochs="$2"; shift 2 ;;
    --target) target="$2"; shift 2 ;;
    --force) force=1; shift ;;
    --) shift; weft_args=("$@"); break ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "train.sh: unknown flag $1" >&2; exit 2 ;;
  esac
done
build="${WEFT_BENCH_BUILD:-$root/build-bench}"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_BENCH=ON -DWEFT_CUDA=OFF >&2
fi
cmake --build "$build" --target weft-train weft-run -j"${JOBS:-2}" >&2

load1=$(cut -d' ' -f1 /proc/loadavg) warning=""
if awk -v l="$load1" -v ml="${DDP_MAX_LOAD:-0.5}" 'BEGIN { exit !(l > ml) }'; then
  warning="machine busy before the run: 1-minute load $load1"
  if ((!force)); then
    echo "train.sh: refusing to time on a busy machine: $warning (--force to time anyway)" >&2
    exit 3
  fi
fi

export OMP_NUM_THREADS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run2() { "$build/tools/weft-run" --standalone --no-prefix --nproc-per-node 2 "$@"; }

t0=$(date +%s.%N)
run2 "$build/tools/weft-train" --no-progress --checkpoint-dir "$work/ck" "${weft_args[@]}" >&2
t1=$(date +%s.%N)
MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=4294967295 \
  run2 "$python" "$here/torch_train.py" --epochs "$torch_epochs" | grep '^{' > "$work/torch.json"
t2=$(date +%s.%N)
load_after=$(cut -d' ' -f1 /proc/loadavg)

"$python" - "$work/ck/metrics.csv" "$work/torch.json" "$target" "$t0" "$t1" "$t2" \
  "$warning" "${weft_args[*]:-}" <<'PY'
import csv, json, sys
metrics, torch_json, target, t0, t1, t2, warning, args = sys.argv[1:]
target = float(target)
weft, total = [], 0.0
for row in csv.DictReader(open(metrics)):
    total += float(row["seconds"])
    weft.append((int(row["epoch"]), float(row["test_accuracy"]), total))
torch = [(d["epoch"], d["test_acc"], d["train_s"]) for d in map(json.loads, open(torch_json))]
if warning:
    print(f"!! WARNING: {warning}; these timings are not worth much\n")
print(f"Main job, 2 ranks x 1 thread: weft-train {args or '(defaults)'} vs bench/torch_train.py")
print(f"(wall: weft {float(t1) - float(t0):.0f} s, PyTorch {float(t2) - float(t1):.0f} s, "
      "start-up and evaluation included)\n")
print("| epoch | weft test acc | weft train s | torch test acc | torch train s |")
print("|---|---|---|---|---|")
for e in range(max(len(weft), len(torch))):
    w = weft[e] if e < len(weft) else None
    t = torch[e] if e < len(torch) else None
    cells = [str(e + 1)]
    cells += [f"{w[1] * 100:.2f}%", f"{w[2]:.1f}"] if w else ["", ""]
    cells += [f"{t[1] * 100:.2f}%", f"{t[2]:.1f}"] if t else ["", ""]
    print("| " + " | ".join(cells) + " |")
first = lambda rows: next(((e, s) for e, a, s in rows if a >= target), None)
fw, ft = first(weft), first(torch)
print()
for name, f in (("weft", fw), ("PyTorch", ft)):
    print(f"{name}: " + (f"{target * 100:.2f}% after epoch {f[0]}, {f[1]:.1f} s of training"
                         if f else f"never reached {target * 100:.2f}%"))
if fw and ft:
    print(f"time to {target * 100:.2f}%: weft/PyTorch = {fw[1] / ft[1]:.2f}")
PY
echo "(1-minute load before: $load1, after: $load_after)"
