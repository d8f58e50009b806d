#!/usr/bin/env python3
"""torch_train.py: PyTorch's side of bench/train.sh, the main job's time to accuracy.

Fashion-MNIST with PyTorch's usual recipe: the CNN of weft-train's --model cnn without dropout
(conv3x3 32 + BN + ReLU + pool, conv3x3 64 + BN + ReLU + pool, linear 3136->128 + ReLU, linear
128->10), DDP over gloo, SGD lr 0.05 momentum 0.9 weight decay 5e-4, cosine annealing per step,
batch 64 per rank, DistributedSampler (seed 0, drop_last), inputs normalised with mean 0.2860
and std 0.3530. Launch under weft-run (torchrun is broken in Debian's PyTorch 1.13):
  weft-run --nproc-per-node 2 --no-prefix python3 torch_train.py --epochs 3 [--threads 1]
Rank 0 prints one JSON line per epoch: test accuracy on the 10,000 test images, training
seconds so far (data loading and steps; evaluation excluded) and images per second.
"""
import argparse
import gzip
import json
import os
import struct
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(root, split):
    images = read_idx(os.path.join(root, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, f"{split}-labels-idx1-ubyte.gz"))
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - 0.2860) / 0.3530
    return x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def make_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    torch.manual_seed(0)
    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "t10k")
    model = make_cnn()
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(ddp.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    per_rank = len(xtr) // world
    steps = per_rank // a.batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs * steps)
    train_s = 0.0
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(epoch)  # DistributedSampler's order: seed + epoch
        order = torch.randperm(len(xtr), generator=g)[rank:world * per_rank:world]
        model.train()
        for s in range(steps):
            idx = order[s * a.batch_size:(s + 1) * a.batch_size]
            opt.zero_grad()
            F.cross_entropy(ddp(xtr[idx]), ytr[idx]).backward()
            opt.step()
            sched.step()
        train_s += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct = sum((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
                          for i in range(0, len(xte), 1000))
        if rank == 0:
            print(json.dumps({"impl": "torch", "epoch": epoch + 1, "test_acc": correct / len(xte),
                              "train_s": round(train_s, 2),
                              "images_per_s": round(world * steps * a.batch_size * (epoch + 1)
                                                    / train_s)}), flush=True)
    if dist.is_initialized():
        dist.barrier()
        os._exit(0)  # skip gloo's teardown (see torch_ddp.py)


if __name__ == "__main__":
    main()
