#!/usr/bin/env python3
"""torch_step.py: the PyTorch side of bench/compare.sh.

Times the same training step as weft_step (zero_grad, forward, loss, backward, SGD step with
lr 0.01 and momentum 0.9) on DESIGN.md's workloads and prints one line of JSON:
  torch_step.py --workload linear|convbn|mlp25m --threads N --steps S --warmup W [--batch B]
                [--device cpu|cuda] [--wrap none|ddp|dp] [--amp none|bf16|fp16]
On CUDA the batch defaults to 256 and each step ends with torch.cuda.synchronize(); --wrap ddp
is DistributedDataParallel at world 1, --wrap dp DataParallel over one device. --amp runs
forward and loss under torch.autocast in that dtype (no loss scaling).
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_workload(name, batch, gpu):
    if gpu and name != "linear":
        batch = batch or 256
    if name == "linear":
        batch = batch or 30
        model = nn.Linear(5, 2)
        x, y = torch.randn(batch, 5), torch.randn(batch, 2)
        loss = F.mse_loss
    elif name == "convbn":
        batch = batch or 32
        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
        x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
        loss = F.cross_entropy
    elif name == "mlp25m":
        batch = batch or 16
        model = nn.Sequential(
            nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 4096), nn.ReLU(),
            nn.Linear(4096, 2048), nn.ReLU(), nn.Linear(2048, 1024))
        x, y = torch.randn(batch, 1024), torch.randn(batch, 1024)
        loss = F.mse_loss
    else:
        raise SystemExit(f"unknown workload {name}")
    return model, x, y, loss


def percentile(v, p):
    v = sorted(v)
    idx = p * (len(v) - 1)
    lo = int(idx)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (idx - lo) * (v[hi] - v[lo])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=["linear", "convbn", "mlp25m"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--wrap", default="none", choices=["none", "ddp", "dp"])
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    a = ap.parse_args()
    gpu = a.device == "cuda"
    if gpu:
        # As weft's defaults (weft::cuda::allow_tf32() is false): no TF32 in float32 products or
        # convolutions. PyTorch's own default allows it in cuDNN convolutions, which would
        # compare tensor-core TF32 against weft's float32 FMA math.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, x, y, loss_fn = make_workload(a.workload, a.batch, gpu)
    dev = torch.device(a.device)
    model, x, y = model.to(dev), x.to(dev), y.to(dev)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step_model = model
    if a.wrap == "ddp":
        import torch.distributed as dist
        dist.init_process_group("nccl" if gpu else "gloo", init_method="tcp://127.0.0.1:29632",
                                rank=0, world_size=1)
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=[0] if gpu else None)
    elif a.wrap == "dp":
        step_model = nn.DataParallel(model, device_ids=[0] if gpu else None)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    amp_dtype = torch.float16 if a.amp == "fp16" else torch.bfloat16

    ms = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast(a.device, dtype=amp_dtype, enabled=a.amp != "none"):
            loss = loss_fn(step_model(x), y)
        loss.backward()
        opt.step()
        sync()
        t1 = time.perf_counter()
        if s >= a.warmup:
            ms.append((t1 - t0) * 1e3)
    loss.item()

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "torch", "workload": a.workload, "device": a.device,
                      "wrap": a.wrap, "amp": a.amp, "threads": a.threads, "tf32": False,
                      "median_ms": round(percentile(ms, 0.5), 4),
                      "p10_ms": round(percentile(ms, 0.1), 4),
                      "p90_ms": round(percentile(ms, 0.9), 4),
                      "peak_rss_mb": round(rss_mb, 1)}, separators=(",", ":")))
    if a.wrap == "ddp":
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
