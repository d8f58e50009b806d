#!/usr/bin/env python3
"""torch_zero.py: the PyTorch side of bench/zero.sh (bench/weft_zero.cpp is weft's).

The DistributedDataParallel training step with Adam (lr 1e-3) of a workload of torch_step.py,
gloo, the optimizer whole on every rank (--mode ddp) or sharded by
torch.distributed.optim.ZeroRedundancyOptimizer (--mode zero). Launch it under weft-run or
torchrun (alone it is a world of one). Rank 0 prints one JSON line.
  torch_zero.py [--workload mlp25m] [--mode ddp|zero] [--threads T] [--steps S] [--warmup W]
                [--batch B]
Every rank builds the model from seed 0 and draws its batch from seed 1000 + rank. After W
untimed steps come S timed ones. Reported: the slowest rank's median, p10 and p90 step ms; each
rank's peak RSS (VmHWM of /proc/self/status) and the bytes of optimizer state it holds.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.optim import ZeroRedundancyOptimizer

from torch_step import make_workload, percentile

KEEP = []  # tensors handed to collectives stay referenced (see torch_ddp.py, pytorch#56297)


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def state_mb(opt):
    """Bytes of the optimizer state this rank holds (ZeRO: its local optimizer's)."""
    inner = opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else opt
    n = 0
    for st in inner.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                n += v.numel() * v.element_size()
    return n / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="mlp25m", choices=["linear", "convbn", "mlp25m"])
    ap.add_argument("--mode", default="zero", choices=["ddp", "zero"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=0)
    a = ap.parse_args()
    for k, v in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29639"), ("RANK", "0"),
                 ("WORLD_SIZE", "1")):
        os.environ.setdefault(k, v)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, x, y, loss_fn = make_workload(a.workload, a.batch, False)
    torch.manual_seed(1000 + rank)
    x = torch.randn_like(x)
    y = torch.randint_like(y, 0, 10) if y.dtype == torch.int64 else torch.randn_like(y)
    model.train()
    ddp = nn.parallel.DistributedDataParallel(model)
    if a.mode == "ddp":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.Adam, lr=1e-3)
    ms = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss_fn(ddp(x), y).backward()
        opt.step()
        if s >= a.warmup:
            ms.append((time.perf_counter() - t0) * 1e3)
    t = torch.tensor([percentile(ms, 0.5), percentile(ms, 0.1), percentile(ms, 0.9)],
                     dtype=torch.float64)
    KEEP.append(t)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    mine = [peak_rss_mb(), state_mb(opt)]
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        med, p10, p90 = t.tolist()
        print(json.dumps({
            "impl": "torch", "mode": a.mode, "workload": a.workload, "world": world,
            "threads": a.threads, "batch": x.shape[0], "steps": a.steps,
            "median_ms": round(med, 4), "p10_ms": round(p10, 4), "p90_ms": round(p90, 4),
            "peak_rss_mb": [round(e[0], 1) for e in everyone],
            "optim_state_mb": [round(e[1], 1) for e in everyone]}, separators=(",", ":")),
            flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
