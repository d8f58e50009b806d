#!/usr/bin/python3
"""Interop helper for weft's safetensors tests (run with /usr/bin/python3).

  check_safetensors.py read FILE
      Prints, for each tensor in name order, one line
          <name> <dtype> <shape> <sum>
      shape is written like [3,4] (no spaces; [] for a 0-d tensor); sum is the
      sum of all elements, computed in float64 and printed with repr() (17
      significant digits) for floating dtypes, and as an exact integer for
      integer and BOOL dtypes.  Then one line per metadata entry, in key order:
          __metadata__ <key> <value>
      Exit status 0 on success, 1 if the file cannot be parsed.

  check_safetensors.py write FILE
      Writes a fixed file whose values have closed forms:
          "a"  F32 [3,4]  a[i][j] = 0.5 * (4*i + j) - 1.0     (sum 21.0)
          "b"  I64 [5]    b[i]    = 3*i - 7                    (sum -5)
          "c"  F32 []     c       = 2.5
          __metadata__ {"format": "pt", "producer": "check_safetensors.py"}
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from safetensors_io import _DTYPE_TO_STR, load_file, save_file  # noqa: E402


def cmd_read(path):
    try:
        tensors, metadata = load_file(path)
    except (ValueError, KeyError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name in sorted(tensors):
        t = tensors[name]
        shape = "[" + ",".join(str(s) for s in t.shape) + "]"
        if t.is_floating_point():
            s = repr(float(t.double().sum().item()))
        else:
            s = str(int(t.long().sum().item()))
        print(f"{name} {_DTYPE_TO_STR[t.dtype]} {shape} {s}")
    for k in sorted(metadata):
        print(f"__metadata__ {k} {metadata[k]}")
    return 0


def cmd_write(path):
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.0
    b = torch.arange(5, dtype=torch.int64) * 3 - 7
    c = torch.tensor(2.5, dtype=torch.float32)
    save_file({"a": a, "b": b, "c": c}, path,
              metadata={"format": "pt", "producer": "check_safetensors.py"})
    return 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("read", "write"):
        print("usage: check_safetensors.py read|write FILE", file=sys.stderr)
        return 2
    return cmd_read(argv[2]) if argv[1] == "read" else cmd_write(argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
