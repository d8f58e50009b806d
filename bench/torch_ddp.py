#!/usr/bin/env python3
"""torch_ddp.py: the PyTorch side of bench/ddp.sh (bench/weft_ddp.cpp is weft's).

The DistributedDataParallel training step of a workload of torch_step.py at any world size
(launch it under weft-run or torchrun; alone it is a world of one), gloo, a fixed per-rank
batch, and the share of the gradient all-reduce that backward hides. Rank 0 prints one JSON line.
  torch_ddp.py --workload linear|convbn|mlp25m [--threads T] [--steps S] [--warmup W] [--batch B]
Every rank builds the model from seed 0 (DDP broadcasts rank 0's anyway) and draws its batch
from seed 1000 + rank. After 3 DDP steps (the reducer rebuilds its buckets in gradient order)
come W untimed and S timed rounds; each round times, one after another:
  ddp        the DDP step: zero_grad, forward, loss, backward (with the bucketed all-reduces
             overlapping it), SGD step (lr 0.01, momentum 0.9)
  nosync     the same step under no_sync(): no gradient communication
  allreduce  after a barrier, the all-reduces of float32 buffers the size of the reducer's
             buckets, issued together and all waited for: the communication alone
hidden_share = 1 - (ddp - nosync) / allreduce on the medians, clamped to [0, 1]; null at
world 1. Each reported statistic is the largest over the ranks (the slowest rank's).
"""
import argparse
import json
import os
import resource
import time

import torch
import torch.distributed as dist
import torch.nn as nn

from torch_step import make_workload, percentile


def timed_step(model, x, y, loss_fn, opt):
    t0 = time.perf_counter()
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()
    return (time.perf_counter() - t0) * 1e3


def bucket_buffers(ddp):
    """Zero float32 buffers the size of each of the reducer's buckets (after its rebuild)."""
    data = ddp._get_ddp_logging_data()
    sizes = data.get("rebuilt_bucket_sizes") or data["bucket_sizes"]
    return [torch.zeros(int(b) // 4) for b in str(sizes).split(",")]


def timed_allreduces(buffers):
    """The buckets' all-reduces alone, issued in order and asynchronously, from a barrier."""
    dist.barrier()
    t0 = time.perf_counter()
    works = [dist.all_reduce(b, async_op=True) for b in buffers]
    for w in works:
        w.wait()
    return (time.perf_counter() - t0) * 1e3


# Every tensor handed to a collective stays referenced from Python until the process exits.
# Otherwise gloo's worker thread may drop the last reference to one whose Python object is
# gone, which takes the GIL, while the main thread, holding the GIL, destroys the process
# group (in DDP's reducer) and joins that worker: a deadlock (pytorch/pytorch#56297).
KEEP = []


def slowest(values):
    t = torch.tensor(values, dtype=torch.float64)
    KEEP.append(t)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def run_rounds(ddp, x, y, loss_fn, opt, a):
    for _ in range(3):
        timed_step(ddp, x, y, loss_fn, opt)
    buffers = bucket_buffers(ddp)
    KEEP.extend(buffers)
    ddp_ms, nosync_ms, allreduce_ms = [], [], []
    for r in range(a.warmup + a.steps):
        d = timed_step(ddp, x, y, loss_fn, opt)
        with ddp.no_sync():
            n = timed_step(ddp, x, y, loss_fn, opt)
        ar = timed_allreduces(buffers)
        if r >= a.warmup:
            ddp_ms.append(d)
            nosync_ms.append(n)
            allreduce_ms.append(ar)
    return ddp_ms, nosync_ms, allreduce_ms, buffers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=["linear", "convbn", "mlp25m"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=0)
    a = ap.parse_args()
    for k, v in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29635"), ("RANK", "0"),
                 ("WORLD_SIZE", "1")):
        os.environ.setdefault(k, v)  # not under a launcher: a world of one
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, x, y, loss_fn = make_workload(a.workload, a.batch, False)
    torch.manual_seed(1000 + rank)  # the same model everywhere, this rank's own data
    x = torch.randn_like(x)
    y = torch.randint_like(y, 0, 10) if y.dtype == torch.int64 else torch.randn_like(y)
    model.train()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ddp_ms, nosync_ms, allreduce_ms, buffers = run_rounds(ddp, x, y, loss_fn, opt, a)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    med, p10, p90, nosync, allreduce, rss_mb = slowest([
        percentile(ddp_ms, 0.5), percentile(ddp_ms, 0.1), percentile(ddp_ms, 0.9),
        percentile(nosync_ms, 0.5), percentile(allreduce_ms, 0.5), rss_mb])
    exposed = med - nosync
    hidden = None
    if world > 1 and allreduce > 0:
        hidden = round(min(1.0, max(0.0, 1.0 - exposed / allreduce)), 4)
    if rank == 0:
        print(json.dumps({
            "impl": "torch", "workload": a.workload, "world": world, "threads": a.threads,
            "batch": x.shape[0], "steps": a.steps, "median_ms": round(med, 4),
            "p10_ms": round(p10, 4), "p90_ms": round(p90, 4), "nosync_ms": round(nosync, 4),
            "allreduce_ms": round(allreduce, 4), "exposed_ms": round(exposed, 4),
            "hidden_share": hidden, "buckets": len(buffers),
            "grad_mb": round(sum(b.numel() for b in buffers) * 4 / 1e6, 2),
            "peak_rss_mb": round(rss_mb, 1)}, separators=(",", ":")), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
