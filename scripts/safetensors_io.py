"""Minimal, independent reader/writer of the safetensors format, built on torch.

The official `safetensors` Python package is not needed (nor used).  Format:

    [u64 little-endian N][N bytes of JSON header, space-padded to a multiple of 8][data]

The header maps each tensor name to {"dtype": "F32"|..., "shape": [...],
"data_offsets": [begin, end]} (byte offsets relative to the start of the data
buffer) and may hold "__metadata__": {str: str}.  The writer lays tensors out
in sorted name order, contiguous and without gaps, little-endian, and emits a
compact JSON header with "__metadata__" first and keys sorted, so the same
input always gives byte-identical files.

API:
    save_file(tensors: dict[str, Tensor], path, metadata: dict[str, str] | None = None)
    load_file(path) -> (dict[str, Tensor], dict[str, str])
"""

import json
import struct
import sys

import torch

if sys.byteorder != "little":  # pragma: no cover
    raise RuntimeError("safetensors_io assumes a little-endian host")

_DTYPE_TO_STR = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_STR_TO_DTYPE = {v: k for k, v in _DTYPE_TO_STR.items()}
_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
    "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}

_MAX_HEADER = 100 * 1024 * 1024


def _tensor_bytes(t):
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    flat = t.reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)  # reinterpret; needs a 1-D contiguous tensor
    return flat.numpy().tobytes()


def save_file(tensors, path, metadata=None):
    """Write `tensors` (name -> torch.Tensor) to `path` in safetensors format."""
    header = {}
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("metadata must be a dict[str, str]")
        header["__metadata__"] = dict(sorted(metadata.items()))
    blobs = []
    offset = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved")
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: not a torch.Tensor")
        if t.dtype not in _DTYPE_TO_STR:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        data = _tensor_bytes(t)
        header[name] = {
            "dtype": _DTYPE_TO_STR[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def load_file(path):
    """Read a safetensors file; returns (dict name -> torch.Tensor, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("file too short for a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise ValueError(f"bad header length {n}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    spans = []
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _STR_TO_DTYPE:
            raise ValueError(f"{name}: unsupported dtype {dt}")
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(x) for x in info["data_offsets"])
        numel = 1
        for s in shape:
            if s < 0:
                raise ValueError(f"{name}: negative dimension")
            numel *= s
        if not (0 <= begin <= end <= len(data)):
            raise ValueError(f"{name}: data_offsets out of range")
        if end - begin != numel * _ITEMSIZE[dt]:
            raise ValueError(f"{name}: byte size does not match shape and dtype")
        spans.append((begin, end))
        if numel == 0:
            t = torch.empty(shape, dtype=_STR_TO_DTYPE[dt])
        else:
            buf = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.uint8)
            if dt != "U8":
                buf = buf.view(_STR_TO_DTYPE[dt])
            t = buf.reshape(shape).clone()
        tensors[name] = t
    # The data buffer must be covered exactly, without overlaps or holes.
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise ValueError("tensor data overlaps or leaves a hole")
        pos = end
    if pos != len(data):
        raise ValueError("trailing bytes after the tensor data")
    return tensors, metadata
