#!/usr/bin/python3
"""Writes the torch.save goldens in tests/golden/torch/ that tests/test_torch_load.cpp reads.

Run with Debian's python3-torch:   /usr/bin/python3 scripts/make_pt_goldens.py [OUTDIR]

Files (see tests/golden/README.md, "torch.save files"):
  cnn.pt               state_dict of a small CNN (Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten,
                       Linear) after one train-mode forward (running stats, num_batches_tracked)
  cnn_dataparallel.pt  the same CNN wrapped in nn.DataParallel ("module." prefixes)
  checkpoint.pt        {'model': cnn state_dict, 'optimizer': SGD(momentum) state after one
                       step, 'epoch': 3, 'best_acc': 0.75, 'arch': 'cnn', 'nested': [...]}
  dtypes.pt            one tensor of every dtype weft loads, a non-contiguous view, two
                       tensors sharing a storage, a 0-d and an empty tensor
  dtypes_legacy.pt     the same in torch.save's pre-1.6 format
  dtypes_proto4.pt     the same pickled with protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL)
  parameter.pt         {'p': an nn.Parameter (torch._utils._rebuild_parameter)}; value parameter.p
  cuda_location.pt     a state_dict whose storages say they were saved on 'cuda:0'
  forbidden_global.pt  a dict whose pickle names posix.system (an object with __reduce__)
  expected.safetensors the values weft must load: cnn.<key>, optim.<key>, dtypes.<key> (each
                       contiguous, in its own dtype), cnn.input and cnn.output (the model's
                       eval-mode output on that input)
"""

import copy
import io
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from safetensors_io import save_file  # noqa: E402

torch.set_num_threads(1)


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4))


def dtype_tensors():
    torch.manual_seed(0)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4 - 1
    shared = torch.arange(10, dtype=torch.int64) * 7 - 20
    return {
        "float32": torch.randn(2, 3),
        "float64": torch.tensor([1.0 / 3, -2.5e-10, 12345.678901, 0.0], dtype=torch.float64),
        "float16": torch.tensor([0.5, -1.25, 65504.0, 6e-8], dtype=torch.float16),
        "bfloat16": torch.tensor([[1.0, -3.0e38], [0.1, 7.0]], dtype=torch.bfloat16),
        "int64": torch.tensor([-(2**62), 0, 2**62 + 5], dtype=torch.int64),
        "int32": torch.tensor([-(2**31), 2**31 - 1, 7], dtype=torch.int32),
        "int16": torch.tensor([[-32768, 32767], [1, -1]], dtype=torch.int16),
        "int8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "uint8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True, True]),
        "transposed": base.t(),            # strides (1, 4)
        "strided": base[1:, ::2],          # offset 4, strides (4, 2)
        "shared_base": shared,             # these two share one storage
        "shared_view": shared[3:9].view(2, 3),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def save_zip(obj, path, **kw):
    torch.save(obj, path, **kw)


def cuda_location(out):
    """A state_dict whose pickle says 'cuda:0': written on the CPU, then the location rewritten."""
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4, dtype=torch.float32)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                old = b"X\x03\x00\x00\x00cpu"
                assert old in data
                data = data.replace(old, b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(info, data)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo weft must not run this",))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden", "torch")
    os.makedirs(out, exist_ok=True)
    expected = {}

    model = cnn()
    x = torch.randn(2, 2, 4, 4)
    model(x)  # train mode: updates the running stats and num_batches_tracked
    model.eval()
    sd = copy.deepcopy(model.state_dict())  # stays as it is while the model trains below
    for k, v in sd.items():
        expected["cnn." + k] = v
    expected["cnn.input"] = x
    with torch.no_grad():
        expected["cnn.output"] = model(x)
    save_zip(sd, os.path.join(out, "cnn.pt"))
    save_zip(nn.DataParallel(model).state_dict(), os.path.join(out, "cnn_dataparallel.pt"))

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    model(x).square().mean().backward()
    opt.step()
    osd = opt.state_dict()
    for i, st in osd["state"].items():
        expected[f"optim.{i}.momentum_buffer"] = st["momentum_buffer"]
    ckpt = {"model": sd, "optimizer": osd, "epoch": 3, "best_acc": 0.75, "arch": "cnn",
            "nested": [1, (2.5, None, True), {"k": "v"}]}
    save_zip(ckpt, os.path.join(out, "checkpoint.pt"))

    dt = dtype_tensors()
    for k, v in dt.items():
        expected["dtypes." + k] = v
    save_zip(dt, os.path.join(out, "dtypes.pt"))
    save_zip(dt, os.path.join(out, "dtypes_legacy.pt"), _use_new_zipfile_serialization=False)
    save_zip(dt, os.path.join(out, "dtypes_proto4.pt"), pickle_protocol=4)

    p = nn.Parameter(torch.tensor([[1.5, -2.0]]))
    expected["parameter.p"] = p.detach()
    save_zip({"p": p}, os.path.join(out, "parameter.pt"))

    cuda_location(os.path.join(out, "cuda_location.pt"))
    save_zip({"w": torch.ones(2), "evil": Evil()}, os.path.join(out, "forbidden_global.pt"))

    save_file({k: v.contiguous() for k, v in expected.items()},
              os.path.join(out, "expected.safetensors"), {"producer": "make_pt_goldens.py"})
    print(f"wrote {len(os.listdir(out))} files to {out}")


if __name__ == "__main__":
    main()
