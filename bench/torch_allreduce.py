#!/usr/bin/env python3
"""torch_allreduce.py: PyTorch's side of bench/weft_allreduce.cpp (bench/ddp.sh runs both).

The raw all-reduce (SUM, float32, in place, one tensor) over the default gloo group, for each
size asked; launch it under weft-run or torchrun (alone it is a world of one).
  torch_allreduce.py [--numel 21000000,20000] [--iters N] [--warmup W]
Rank 0 prints one JSON line per size: median, p10 and p90 ms of one all-reduce (each waited for
before the next is issued) and the algorithm bandwidth bytes / median; each statistic is the
largest over the ranks.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist

from torch_step import percentile


# Every tensor handed to a collective stays referenced from Python until the process exits, so
# that gloo's worker thread never frees one itself, which would take the GIL while the main
# thread may hold it to destroy the group and join that worker (pytorch/pytorch#56297).
KEEP = []


def time_allreduce(numel, a):
    t = torch.zeros(numel)  # zeros: repeated sums never overflow
    KEEP.append(t)
    ms = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        dist.all_reduce(t)
        if i >= a.warmup:
            ms.append((time.perf_counter() - t0) * 1e3)
    st = torch.tensor([percentile(ms, 0.5), percentile(ms, 0.1), percentile(ms, 0.9)],
                      dtype=torch.float64)
    KEEP.append(st)
    dist.all_reduce(st, op=dist.ReduceOp.MAX)
    return st.tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--numel", default="21000000,20000")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    for k, v in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29636"), ("RANK", "0"),
                 ("WORLD_SIZE", "1")):
        os.environ.setdefault(k, v)  # not under a launcher: a world of one
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    dist.barrier()
    for numel in (int(n) for n in a.numel.split(",")):
        med, p10, p90 = time_allreduce(numel, a)
        if dist.get_rank() == 0:
            print(json.dumps({
                "impl": "torch", "bench": "allreduce", "world": dist.get_world_size(),
                "numel": numel, "bytes": numel * 4, "iters": a.iters, "median_ms": round(med, 4),
                "p10_ms": round(p10, 4), "p90_ms": round(p90, 4),
                "algbw_gbps": round(numel * 4 / (med * 1e6), 3)}, separators=(",", ":")),
                flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
