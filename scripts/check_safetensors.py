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

  check_safetensors.py verify FILE
      Recomputes each tensor's XXH64 (seed 0) over its bytes as stored, with
      the independent implementation below, and prints one line per tensor in
      name order: "<name> ok" when it equals the metadata entry
      "weft.xxh64.<name>", "<name> mismatch <computed> <stored>" when not, or
      "<name> none" when the file has no entry for it.  Exit status 1 on any
      mismatch.

  check_safetensors.py write FILE
      Writes a fixed file whose values have closed forms:
          "a"  F32 [3,4]  a[i][j] = 0.5 * (4*i + j) - 1.0     (sum 21.0)
          "b"  I64 [5]    b[i]    = 3*i - 7                    (sum -5)
          "c"  F32 []     c       = 2.5
          __metadata__ {"format": "pt", "producer": "check_safetensors.py"}
"""

import json
import os
import struct
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


# XXH64 as its specification (xxhash's doc/xxhash_spec.md) defines it, on Python integers.
_P1, _P2, _P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P4, _P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5
_M = (1 << 64) - 1


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc, lane):
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def _merge(acc, val):
    return ((acc ^ _round(0, val)) * _P1 + _P4) & _M


def xxh64(data, seed=0):
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed, (seed - _P1) & _M]
        while i + 32 <= n:
            v = [_round(acc, lane) for acc, lane in zip(v, struct.unpack_from("<4Q", data, i))]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
        for acc in v:
            h = _merge(h, acc)
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 8 <= n:
        h = (_rotl(h ^ _round(0, struct.unpack_from("<Q", data, i)[0]), 27) * _P1 + _P4) & _M
        i += 8
    if i + 4 <= n:
        h = (_rotl(h ^ ((struct.unpack_from("<I", data, i)[0] * _P1) & _M), 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        h = (_rotl(h ^ ((data[i] * _P5) & _M), 11) * _P1) & _M
        i += 1
    h = ((h ^ (h >> 33)) * _P2) & _M
    h = ((h ^ (h >> 29)) * _P3) & _M
    return h ^ (h >> 32)


def cmd_verify(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    status = 0
    for name in sorted(header):
        begin, end = header[name]["data_offsets"]
        stored = meta.get("weft.xxh64." + name)
        computed = "%016x" % xxh64(data[begin:end])
        if stored is None:
            print(f"{name} none")
        elif stored == computed:
            print(f"{name} ok")
        else:
            print(f"{name} mismatch {computed} {stored}")
            status = 1
    return status


def cmd_write(path):
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.0
    b = torch.arange(5, dtype=torch.int64) * 3 - 7
    c = torch.tensor(2.5, dtype=torch.float32)
    save_file({"a": a, "b": b, "c": c}, path,
              metadata={"format": "pt", "producer": "check_safetensors.py"})
    return 0


def main(argv):
    commands = {"read": cmd_read, "write": cmd_write, "verify": cmd_verify}
    if len(argv) != 3 or argv[1] not in commands:
        print("usage: check_safetensors.py read|write|verify FILE", file=sys.stderr)
        return 2
    return commands[argv[1]](argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
