#!/usr/bin/python3
"""Writes the golden files in tests/golden/ that weft's C++ tests compare against.

Run with Debian's python3-torch:   /usr/bin/python3 scripts/make_golden.py [OUTDIR]

Conventions (see tests/golden/README.md): float32 everywhere (int64 for labels,
indices and num_batches_tracked), torch.manual_seed(0) at the start of each case,
one safetensors file per case with
  in.<i>                 inputs (float inputs require grad when differentiable)
  param.<name>           module parameters and buffers before the forward (state_dict names)
  out / out.<i>          output(s)
  gout                   upstream gradient fed to backward (shape [] for scalar outputs)
  grad.in.<i>            gradients of the inputs
  grad.param.<name>      gradients of the parameters
  after.<name>           buffers after the forward (BatchNorm)
  __metadata__           {"case": name, "config": JSON string of the arguments}
Re-running gives byte-identical files (single thread, fixed seeds, deterministic writer).
"""

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from safetensors_io import load_file, save_file  # noqa: E402

torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

OUTDIR = None
CASES = []  # (name, fn)


def case(name):
    def deco(fn):
        CASES.append((name, fn))
        return fn
    return deco


def write(name, tensors, config):
    clean = {}
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous().clone()
        if v.dtype not in (torch.float32, torch.float64, torch.int64, torch.bfloat16):
            raise TypeError(f"{name}/{k}: unexpected dtype {v.dtype}")
        clean[k] = v
    meta = {"case": name, "config": json.dumps(config, sort_keys=True, separators=(",", ":"))}
    path = os.path.join(OUTDIR, name + ".safetensors")
    save_file(clean, path, meta)


def leaf(t, grad=True):
    t = t.detach().clone().float()
    if grad:
        t.requires_grad_(True)
    return t


def run_fn(name, fn, inputs, config, grad_mask=None, nonfloat=()):
    """Generic op case: out = fn(*inputs); backward with random gout."""
    tensors = {}
    for i, x in enumerate(inputs):
        tensors[f"in.{i}"] = x
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if len(outs) == 1:
        tensors["out"] = outs[0]
    else:
        for i, o in enumerate(outs):
            tensors[f"out.{i}"] = o
    diff_out = outs[0]
    gout = torch.randn(diff_out.shape)
    tensors["gout"] = gout
    diff_out.backward(gout)
    for i, x in enumerate(inputs):
        if x.requires_grad:
            tensors[f"grad.in.{i}"] = x.grad
    write(name, tensors, config)


# ----------------------------------------------------------------------------- ops

def _binary(name, op, divisor=False):
    a = leaf(torch.randn(4, 1, 3))
    b = torch.randn(5, 3)
    if divisor:  # |b| in [0.5, 1.5), random sign
        b = torch.sign(b) * (torch.rand(5, 3) + 0.5)
    b = leaf(b)
    run_fn(name, op, [a, b], {"op": name.split("_")[0], "shapes": [[4, 1, 3], [5, 3]]})


@case("add_bcast")
def _():
    _binary("add_bcast", torch.add)


@case("sub_bcast")
def _():
    _binary("sub_bcast", torch.sub)


@case("mul_bcast")
def _():
    _binary("mul_bcast", torch.mul)


@case("div_bcast")
def _():
    _binary("div_bcast", torch.div, divisor=True)


def _unary(name, op, x, config=None):
    run_fn(name, op, [leaf(x)], config or {"op": name})


@case("neg")
def _():
    _unary("neg", torch.neg, torch.randn(3, 4))


@case("exp")
def _():
    _unary("exp", torch.exp, torch.randn(3, 4))


@case("log")
def _():
    _unary("log", torch.log, torch.rand(3, 4) * 2 + 0.1)


@case("sqrt")
def _():
    _unary("sqrt", torch.sqrt, torch.rand(3, 4) * 2 + 0.1)


@case("pow_scalar")
def _():
    _unary("pow_scalar", lambda x: torch.pow(x, 2.5), torch.randn(3, 4).abs() + 0.5,
           {"op": "pow", "exponent": 2.5})


@case("relu")
def _():
    _unary("relu", torch.relu, torch.randn(3, 4))


@case("sigmoid")
def _():
    _unary("sigmoid", torch.sigmoid, torch.randn(3, 4) * 2)


@case("tanh")
def _():
    _unary("tanh", torch.tanh, torch.randn(3, 4) * 2)


@case("abs")
def _():
    _unary("abs", torch.abs, torch.randn(3, 4))


@case("clamp")
def _():
    _unary("clamp", lambda x: torch.clamp(x, min=-0.5, max=0.5), torch.randn(3, 4),
           {"op": "clamp", "min": -0.5, "max": 0.5})


@case("sum_dim")
def _():
    _unary("sum_dim", lambda x: x.sum(dim=1, keepdim=False), torch.randn(3, 4, 5),
           {"op": "sum", "dim": [1], "keepdim": False})


@case("sum_all")
def _():
    _unary("sum_all", lambda x: x.sum(), torch.randn(3, 4, 5), {"op": "sum", "dim": None})


@case("mean_dim")
def _():
    _unary("mean_dim", lambda x: x.mean(dim=(0, 2), keepdim=True), torch.randn(3, 4, 5),
           {"op": "mean", "dim": [0, 2], "keepdim": True})


@case("max_dim")
def _():
    # distinct values (a permutation), so there are no ties
    x = torch.randperm(60).float().reshape(3, 4, 5) * 0.1 - 3.0
    run_fn("max_dim", lambda t: tuple(t.max(dim=1, keepdim=False)), [leaf(x)],
           {"op": "max", "dim": 1, "keepdim": False})


@case("matmul_2d")
def _():
    run_fn("matmul_2d", torch.matmul, [leaf(torch.randn(7, 5)), leaf(torch.randn(5, 3))],
           {"op": "matmul"})


@case("matmul_batched")
def _():
    run_fn("matmul_batched", torch.matmul,
           [leaf(torch.randn(2, 4, 5)), leaf(torch.randn(2, 5, 3))], {"op": "matmul"})


@case("transpose_contig")
def _():
    _unary("transpose_contig", lambda x: x.transpose(0, 2).contiguous(), torch.randn(2, 3, 4),
           {"op": "transpose", "dim0": 0, "dim1": 2, "contiguous": True})


@case("cat_dim1")
def _():
    run_fn("cat_dim1", lambda a, b: torch.cat([a, b], dim=1),
           [leaf(torch.randn(2, 3, 4)), leaf(torch.randn(2, 2, 4))], {"op": "cat", "dim": 1})


@case("stack_dim0")
def _():
    run_fn("stack_dim0", lambda a, b: torch.stack([a, b], dim=0),
           [leaf(torch.randn(3, 4)), leaf(torch.randn(3, 4))], {"op": "stack", "dim": 0})


@case("softmax_dim1")
def _():
    _unary("softmax_dim1", lambda x: torch.softmax(x, dim=1), torch.randn(4, 5) * 2,
           {"op": "softmax", "dim": 1})


@case("log_softmax_dim1")
def _():
    _unary("log_softmax_dim1", lambda x: torch.log_softmax(x, dim=1), torch.randn(4, 5) * 2,
           {"op": "log_softmax", "dim": 1})


# ------------------------------------------------------------------------- modules

def run_module(name, module, x, config, train=True, extra_buffers=True):
    module.train(train)
    tensors = {}
    params = dict(module.named_parameters())
    for k, v in module.state_dict().items():
        tensors[f"param.{k}"] = v.clone()
    x = leaf(x)
    tensors["in.0"] = x
    out = module(x)
    tensors["out"] = out
    gout = torch.randn(out.shape)
    tensors["gout"] = gout
    out.backward(gout)
    tensors["grad.in.0"] = x.grad
    for k, p in params.items():
        tensors[f"grad.param.{k}"] = p.grad
    if extra_buffers:
        for k, b in module.named_buffers():
            tensors[f"after.{k}"] = b.clone()
    write(name, tensors, config)


@case("linear")
def _():
    run_module("linear", nn.Linear(5, 3), torch.randn(4, 5),
               {"module": "Linear", "in_features": 5, "out_features": 3, "bias": True})


@case("linear_nobias")
def _():
    run_module("linear_nobias", nn.Linear(5, 3, bias=False), torch.randn(4, 5),
               {"module": "Linear", "in_features": 5, "out_features": 3, "bias": False})


def _conv(name, cin, cout, k, shape, stride=1, padding=0, dilation=1, groups=1, bias=True):
    m = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                  groups=groups, bias=bias)
    cfg = {"module": "Conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": [k, k],
           "stride": [stride, stride], "padding": [padding, padding],
           "dilation": [dilation, dilation], "groups": groups, "bias": bias,
           "input_shape": list(shape)}
    run_module(name, m, torch.randn(*shape), cfg)


@case("conv2d_basic")
def _():
    _conv("conv2d_basic", 3, 4, 3, (2, 3, 7, 7))


@case("conv2d_stride_pad")
def _():
    _conv("conv2d_stride_pad", 3, 6, 3, (2, 3, 7, 7), stride=2, padding=1)


@case("conv2d_dilation")
def _():
    _conv("conv2d_dilation", 2, 4, 3, (2, 2, 8, 8), padding=2, dilation=2)


@case("conv2d_groups")
def _():
    _conv("conv2d_groups", 4, 6, 3, (2, 4, 6, 6), padding=1, groups=2, bias=False)


@case("conv2d_depthwise")
def _():
    _conv("conv2d_depthwise", 4, 4, 3, (2, 4, 6, 6), padding=1, groups=4)


@case("conv2d_1x1")
def _():
    _conv("conv2d_1x1", 8, 4, 1, (2, 8, 5, 5))


@case("conv2d_winograd")
def _():
    # 3x3, stride 1, >= 16 channels in and out: weft runs it on oneDNN's Winograd kernels.
    _conv("conv2d_winograd", 16, 16, 3, (2, 16, 8, 8), padding=1)


def _bn_init(m):
    """Non-trivial weight/bias/running stats; num_batches_tracked stays 0."""
    with torch.no_grad():
        c = m.num_features
        if m.affine:
            m.weight.copy_(torch.randn(c))
            m.bias.copy_(torch.randn(c))
        m.running_mean.copy_(torch.randn(c))
        m.running_var.copy_(torch.rand(c) + 0.5)
    return m


def _bn_cfg(kind, c, shape, train, momentum=0.1, affine=True):
    return {"module": kind, "num_features": c, "eps": 1e-5, "momentum": momentum,
            "affine": affine, "track_running_stats": True, "training": train,
            "input_shape": list(shape)}


@case("batchnorm1d_train")
def _():
    m = _bn_init(nn.BatchNorm1d(4))
    run_module("batchnorm1d_train", m, torch.randn(6, 4) * 2 + 1,
               _bn_cfg("BatchNorm1d", 4, (6, 4), True))


@case("batchnorm1d_3d_train")
def _():
    m = _bn_init(nn.BatchNorm1d(4))
    run_module("batchnorm1d_3d_train", m, torch.randn(3, 4, 5) * 2 + 1,
               _bn_cfg("BatchNorm1d", 4, (3, 4, 5), True))


@case("batchnorm2d_train")
def _():
    m = _bn_init(nn.BatchNorm2d(3))
    run_module("batchnorm2d_train", m, torch.randn(4, 3, 5, 5) * 2 + 1,
               _bn_cfg("BatchNorm2d", 3, (4, 3, 5, 5), True))


@case("batchnorm2d_eval")
def _():
    m = _bn_init(nn.BatchNorm2d(3))
    run_module("batchnorm2d_eval", m, torch.randn(4, 3, 5, 5) * 2 + 1,
               _bn_cfg("BatchNorm2d", 3, (4, 3, 5, 5), False), train=False)


@case("batchnorm2d_noaffine")
def _():
    m = _bn_init(nn.BatchNorm2d(3, affine=False))
    run_module("batchnorm2d_noaffine", m, torch.randn(4, 3, 5, 5) * 2 + 1,
               _bn_cfg("BatchNorm2d", 3, (4, 3, 5, 5), True, affine=False))


@case("batchnorm2d_momentum_none")
def _():
    name = "batchnorm2d_momentum_none"
    m = _bn_init(nn.BatchNorm2d(3, momentum=None))
    m.train()
    tensors = {f"param.{k}": v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for i in range(3):
            x = torch.randn(4, 3, 5, 5) * 2 + 1 + i
            tensors[f"in.{i}"] = x
            out = m(x)
    tensors["out"] = out
    for k, b in m.named_buffers():
        tensors[f"after.{k}"] = b.clone()
    cfg = _bn_cfg("BatchNorm2d", 3, (4, 3, 5, 5), True, momentum=None)
    cfg["forward_calls"] = 3
    write(name, tensors, cfg)


def _pool(name, m, shape, cfg):
    cfg = dict(cfg)
    cfg["input_shape"] = list(shape)
    run_module(name, m, torch.randn(*shape), cfg)


@case("maxpool2d")
def _():
    _pool("maxpool2d", nn.MaxPool2d(2, 2), (2, 3, 6, 6),
          {"module": "MaxPool2d", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0],
           "dilation": [1, 1], "ceil_mode": False})


@case("maxpool2d_pad")
def _():
    _pool("maxpool2d_pad", nn.MaxPool2d(3, stride=2, padding=1), (2, 2, 7, 7),
          {"module": "MaxPool2d", "kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1],
           "dilation": [1, 1], "ceil_mode": False})


@case("avgpool2d")
def _():
    _pool("avgpool2d", nn.AvgPool2d(2), (2, 3, 6, 6),
          {"module": "AvgPool2d", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0],
           "ceil_mode": False, "count_include_pad": True})


@case("avgpool2d_pad")
def _():
    _pool("avgpool2d_pad", nn.AvgPool2d(3, stride=2, padding=1), (2, 2, 7, 7),
          {"module": "AvgPool2d", "kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1],
           "ceil_mode": False, "count_include_pad": True})


@case("adaptive_avgpool2d")
def _():
    _pool("adaptive_avgpool2d", nn.AdaptiveAvgPool2d(1), (2, 3, 5, 5),
          {"module": "AdaptiveAvgPool2d", "output_size": [1, 1]})


@case("adaptive_avgpool2d_3x3")
def _():
    _pool("adaptive_avgpool2d_3x3", nn.AdaptiveAvgPool2d(3), (2, 3, 7, 8),
          {"module": "AdaptiveAvgPool2d", "output_size": [3, 3]})


@case("flatten")
def _():
    _pool("flatten", nn.Flatten(1), (2, 3, 4, 5),
          {"module": "Flatten", "start_dim": 1, "end_dim": -1})


# -------------------------------------------------------------------------- losses

def _loss(name, fn, inp, target, reduction, cfg):
    x = leaf(inp)
    tensors = {"in.0": x, "in.1": target}
    out = fn(x, target, reduction=reduction)
    tensors["out"] = out
    gout = torch.randn(out.shape)  # shape [] for mean/sum
    tensors["gout"] = gout
    out.backward(gout)
    tensors["grad.in.0"] = x.grad
    cfg = dict(cfg)
    cfg["reduction"] = reduction
    cfg["target_requires_grad"] = False
    write(name, tensors, cfg)


REDUCTIONS = ("mean", "sum", "none")


def _mk_loss_cases():
    for red in REDUCTIONS:
        def mse(red=red):
            _loss(f"mse_{red}", F.mse_loss, torch.randn(4, 5), torch.randn(4, 5), red,
                  {"loss": "MSELoss"})

        def bce(red=red):
            _loss(f"bce_{red}", F.binary_cross_entropy, torch.sigmoid(torch.randn(4, 5) * 2),
                  torch.rand(4, 5), red, {"loss": "BCELoss", "weight": None})

        def bcel(red=red):
            _loss(f"bce_with_logits_{red}", F.binary_cross_entropy_with_logits,
                  torch.randn(4, 5) * 2, torch.rand(4, 5), red,
                  {"loss": "BCEWithLogitsLoss", "weight": None, "pos_weight": None})

        def ce(red=red):
            _loss(f"cross_entropy_{red}", F.cross_entropy, torch.randn(6, 5) * 2,
                  torch.randint(0, 5, (6,)), red,
                  {"loss": "CrossEntropyLoss", "weight": None, "ignore_index": -100,
                   "label_smoothing": 0.0})

        case(f"mse_{red}")(mse)
        case(f"bce_{red}")(bce)
        case(f"bce_with_logits_{red}")(bcel)
        case(f"cross_entropy_{red}")(ce)


_mk_loss_cases()


# ---------------------------------------------------------------------- optimizers

OPT_SHAPES = [(4, 3), (3,), (2, 2)]
OPT_STEPS = 5

SGD_BASE = {"optimizer": "SGD", "lr": 0.1, "momentum": 0.0, "dampening": 0.0,
            "weight_decay": 0.0, "nesterov": False, "maximize": False}
ADAM_BASE = {"optimizer": "Adam", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8,
             "weight_decay": 0.0, "amsgrad": False, "maximize": False}
ADAMW_BASE = dict(ADAM_BASE, optimizer="AdamW", weight_decay=0.01)

OPT_CONFIGS = [
    ("sgd_plain", dict(SGD_BASE, lr=0.1)),
    ("sgd_momentum", dict(SGD_BASE, lr=0.1, momentum=0.9)),
    ("sgd_dampening", dict(SGD_BASE, lr=0.1, momentum=0.9, dampening=0.5)),
    ("sgd_nesterov", dict(SGD_BASE, lr=0.1, momentum=0.9, nesterov=True)),
    ("sgd_wd", dict(SGD_BASE, lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("adam", dict(ADAM_BASE, lr=0.01)),
    ("adam_wd", dict(ADAM_BASE, lr=0.01, weight_decay=0.1)),
    # gradients shrink after step 0 so that v_t decreases and the running max matters
    ("adam_amsgrad", dict(ADAM_BASE, lr=0.01, amsgrad=True,
                          grad_scale=[1.0, 0.02, 0.02, 0.02, 0.02])),
    ("adamw", dict(ADAMW_BASE, lr=0.01, weight_decay=0.1)),
    ("adam_betas", dict(ADAM_BASE, lr=0.01, betas=[0.8, 0.99], eps=1e-6)),
]


def _make_opt(params, cfg):
    kind = cfg["optimizer"]
    if kind == "SGD":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                               dampening=cfg["dampening"], weight_decay=cfg["weight_decay"],
                               nesterov=cfg["nesterov"], maximize=cfg["maximize"],
                               foreach=False)
    cls = torch.optim.Adam if kind == "Adam" else torch.optim.AdamW
    return cls(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"],
               weight_decay=cfg["weight_decay"], amsgrad=cfg["amsgrad"],
               maximize=cfg["maximize"], foreach=False)


def _mk_opt_cases():
    for cname, cfg in OPT_CONFIGS:
        def fn(cname=cname, cfg=cfg):
            name = f"optim_{cname}"
            params = [torch.randn(s).requires_grad_(True) for s in OPT_SHAPES]
            tensors = {f"param.{i}": p.detach().clone() for i, p in enumerate(params)}
            opt = _make_opt(params, cfg)
            for t in range(OPT_STEPS):
                for i, p in enumerate(params):
                    g = torch.randn(p.shape) * cfg.get("grad_scale", [1.0] * OPT_STEPS)[t]
                    tensors[f"grad.{t}.{i}"] = g
                    p.grad = g.clone()
                opt.step()
                for i, p in enumerate(params):
                    tensors[f"after.{t}.{i}"] = p.detach().clone()
            full = dict(cfg, grad_scale=cfg.get("grad_scale", [1.0] * OPT_STEPS),
                        steps=OPT_STEPS, shapes=[list(s) for s in OPT_SHAPES])
            write(name, tensors, full)
        case(f"optim_{cname}")(fn)


_mk_opt_cases()


# ---------------------------------------------------------------------- schedulers

SCHED_EPOCHS = 12


def _sched_case(name, make, cfg):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    lrs = []
    for _ in range(SCHED_EPOCHS):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        sched.step()
    cfg = dict(cfg, optimizer="SGD", base_lr=0.1, epochs=SCHED_EPOCHS)
    write(name, {"lrs": torch.tensor(lrs, dtype=torch.float64)}, cfg)


@case("sched_steplr")
def _():
    _sched_case("sched_steplr",
                lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
                {"scheduler": "StepLR", "step_size": 3, "gamma": 0.5})


@case("sched_cosine")
def _():
    _sched_case("sched_cosine",
                lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
                {"scheduler": "CosineAnnealingLR", "T_max": 10, "eta_min": 0.001})


# ----------------------------------------------------------------- training run

@case("train_mlp_sgd")
def _():
    name = "train_mlp_sgd"
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    tensors = {f"param.{k}": v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=False)
    crit = nn.CrossEntropyLoss()
    losses = []
    steps = 5
    for t in range(steps):
        x = torch.randn(6, 4)
        y = torch.randint(0, 3, (6,))
        tensors[f"in.{t}"] = x
        tensors[f"target.{t}"] = y
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tensors["loss"] = torch.tensor(losses, dtype=torch.float32)
    for k, v in model.state_dict().items():
        tensors[f"after.{k}"] = v.clone()
    write(name, tensors, {
        "model": "Sequential(Linear(4,8),ReLU,Linear(8,3))", "loss": "CrossEntropyLoss",
        "reduction": "mean", "optimizer": "SGD", "lr": 0.1, "momentum": 0.9, "dampening": 0.0,
        "weight_decay": 0.0, "nesterov": False, "steps": steps, "batch": [6, 4],
        "num_classes": 3})


# ---------------------------------------------------------------- channel shuffle

def _shuffle(name, shape, groups, channels_last=False):
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.detach().requires_grad_(True)
    # torch 1.13's native channel_shuffle has no backward: take the gradient through the
    # view/transpose definition, and check it agrees with nn.ChannelShuffle's forward.
    n, c = shape[0], shape[1]
    out = x.reshape(n, groups, c // groups, *shape[2:]).transpose(1, 2).reshape(*shape)
    assert torch.equal(out, nn.ChannelShuffle(groups)(x.detach()))
    gout = torch.randn(out.shape)
    out.backward(gout)
    write(name, {"in.0": x, "out": out, "gout": gout, "grad.in.0": x.grad},
          {"module": "ChannelShuffle", "groups": groups, "input_shape": list(shape),
           "channels_last": channels_last})


@case("channel_shuffle_g4")
def _():
    _shuffle("channel_shuffle_g4", (2, 8, 3, 3), 4)


@case("channel_shuffle_3d")
def _():
    _shuffle("channel_shuffle_3d", (2, 6, 5), 3)


@case("channel_shuffle_5d")
def _():
    _shuffle("channel_shuffle_5d", (1, 6, 2, 2, 2), 2)


@case("channel_shuffle_channels_last")
def _():
    _shuffle("channel_shuffle_channels_last", (2, 12, 3, 4), 3, channels_last=True)


@case("channel_shuffle_int64")
def _():
    # torch.arange is int64: PyTorch shuffles it like any dtype (channels-last stays so).
    x = torch.arange(2 * 6 * 2 * 2).view(2, 6, 2, 2)
    cl = nn.ChannelShuffle(3)(x.contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    x3 = torch.arange(2 * 4 * 3).view(2, 4, 3)
    write("channel_shuffle_int64",
          {"in.0": x, "out": nn.ChannelShuffle(3)(x), "out.channels_last": cl.contiguous(),
           "in.1": x3, "out.1": nn.ChannelShuffle(2)(x3)},
          {"module": "ChannelShuffle", "groups": [3, 2], "dtype": "int64"})


# ------------------------------------------------------------------ DistributedSampler

@case("distributed_sampler")
def _():
    # torch.utils.data.DistributedSampler's shards (shuffle=True): "shards.<n>.<seed>.<epoch>.
    # <world>.<drop_last>" holds rank r's indices in row r; "head..." the first 256 of rank 0's
    # for an MNIST-sized dataset. Seeds past 2**32 check that only the low 32 bits count.
    from torch.utils.data import DistributedSampler
    tensors = {}

    def shards(n, seed, epoch, world, drop_last):
        rows = []
        for rank in range(world):
            s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                   seed=seed, drop_last=drop_last)
            s.set_epoch(epoch)
            rows.append(list(s))
        return torch.tensor(rows, dtype=torch.int64)

    for n in (1, 2, 7, 10, 33):
        for seed in (0, 7, 2**32 + 3):
            for epoch in (0, 1, 5):
                for world, drop_last in ((1, False), (3, False), (4, True)):
                    key = f"shards.{n}.{seed}.{epoch}.{world}.{int(drop_last)}"
                    tensors[key] = shards(n, seed, epoch, world, drop_last)
    tensors["shards.1000.42.3.2.0"] = shards(1000, 42, 3, 2, False)
    tensors["head.60000.0.2.2.0"] = shards(60000, 0, 2, 2, False)[0, :256].contiguous()
    write("distributed_sampler", tensors,
          {"sampler": "torch.utils.data.DistributedSampler", "shuffle": True})


@case("random_split")
def _():
    # torch.utils.data.random_split(range(n), lengths, generator=Generator().manual_seed(seed)):
    # "split.<n>.<seed>.<l0>.<l1>..." holds the parts' indices one after another; "head..." the
    # first 256 indices of each of the two parts of an MNIST-sized training set.
    from torch.utils.data import random_split
    tensors = {}

    def parts(n, seed, lengths):
        g = torch.Generator().manual_seed(seed)
        return [list(p) for p in random_split(range(n), lengths, generator=g)]

    for n, lengths in ((1, (1, 0)), (10, (7, 3)), (33, (10, 20, 3)), (1000, (900, 100))):
        for seed in (0, 7, 2**32 + 3):
            key = "split.%d.%d.%s" % (n, seed, ".".join(map(str, lengths)))
            tensors[key] = torch.tensor(sum(parts(n, seed, lengths), []), dtype=torch.int64)
    train, val = parts(60000, 0, (55000, 5000))
    tensors["head.60000.0.55000.5000"] = torch.tensor(train[:256] + val[:256], dtype=torch.int64)
    write("random_split", tensors, {"split": "torch.utils.data.random_split"})


# --------------------------------------------------------------------------- main

@case("half_casts")
def _():
    # float32/int64 <-> bfloat16/float16 conversions, stored in their real dtypes (the file also
    # checks that weft reads BF16/F16 tensors as PyTorch writes them): rounding ties, overflow to
    # inf, subnormals, NaN, signed zero, truncation of halves to int64.
    edge = [0.0, -0.0, 1 / 3, 1.00390625, 1.01171875, -2.5, 65504.0, 65519.99, 65520.0, 1e-8,
            3e-8, 6.1e-5, 3.4e38, 1e-40, float("inf"), float("-inf"), float("nan"), 1e5, -7.75]
    x = torch.cat([torch.tensor(edge), torch.randn(64) * torch.logspace(-6, 6, 64)])
    i = torch.tensor([0, 1, -3, 257, 65519, 65520, 2**24 + 1, -2**31, 123456789])
    h = torch.tensor([-3.7, 2.5, 1e4, -0.5, 0.99, 300.6, -65504.0])
    t = {"x": x, "x.bf16": x.bfloat16(), "x.f16": x.half(), "x.f16.bf16": x.half().bfloat16(),
         "x.bf16.f16": x.bfloat16().half(), "i": i, "i.bf16": i.bfloat16(), "i.f16": i.half(),
         "h": h, "h.bf16.i64": h.bfloat16().long(), "h.f16.i64": h.half().long()}
    meta = {"case": "half_casts", "config": "{}"}
    save_file({k: v.contiguous() for k, v in t.items()},
              os.path.join(OUTDIR, "half_casts.safetensors"), meta)


# ------------------------------------------------------------- bf16 and autocast

def _bf16_op_cases():
    """(name, fn, inputs) for bf16 ops outside autocast: inputs bf16 unless noted."""
    bf = lambda *shape: torch.randn(*shape).bfloat16()  # noqa: E731
    bn_w, bn_b = torch.rand(3) + 0.5, torch.randn(3)
    return [
        ("add", lambda a, b: a + b, [bf(4, 1, 3), bf(5, 3)]),
        ("mul_f32", lambda a, c: a * c, [bf(4, 3), torch.randn(4, 3)]),  # promotes to float32
        ("mul_scalar", lambda a: a * 0.3, [bf(4, 3)]),
        ("div", lambda a, b: a / b, [bf(4, 3), (torch.rand(4, 3) + 0.5).bfloat16()]),
        ("relu", torch.relu, [bf(8, 10)]),
        ("sigmoid", torch.sigmoid, [bf(8, 10)]),
        ("tanh", torch.tanh, [bf(8, 10)]),
        ("exp", torch.exp, [bf(8, 10)]),
        ("sum_dim", lambda a: a.sum(1), [bf(8, 10)]),
        ("mean_dim", lambda a: a.mean(1), [bf(8, 10)]),
        ("max_dim", lambda a: a.max(1).values, [bf(8, 10)]),
        ("log_softmax", lambda a: F.log_softmax(a, 1), [bf(8, 10)]),
        ("linear", F.linear, [bf(6, 16), (torch.randn(8, 16) * 0.25).bfloat16(), bf(8)]),
        ("conv2d", lambda x, w, b: F.conv2d(x, w, b, padding=1),
         [bf(2, 3, 6, 6), (torch.randn(4, 3, 3, 3) * 0.2).bfloat16(), bf(4)]),
        ("batch_norm", lambda x, w, b: F.batch_norm(x, None, None, w, b, True),
         [bf(4, 3, 5, 5), bn_w, bn_b]),  # float32 weight and bias, as under autocast
        ("max_pool2d", lambda x: F.max_pool2d(x, 2), [bf(2, 3, 6, 6)]),
        ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, 1), [bf(2, 3, 6, 6)]),
        ("bce_with_logits", F.binary_cross_entropy_with_logits,
         [bf(4, 5), torch.rand(4, 5).bfloat16()]),
        ("cross_entropy", lambda x, t: F.cross_entropy(x, t), [bf(6, 5), torch.randint(0, 5, (6,))]),
    ]


@case("bf16_ops")
def _():
    # Each op on bfloat16 tensors outside autocast, PyTorch's CPU kernels (float math, results
    # rounded to bf16): <op>.in.<i>, <op>.out, <op>.gout, <op>.grad.<i>, all in their real dtypes.
    tensors = {}
    for name, fn, inputs in _bf16_op_cases():
        ins = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
        out = fn(*ins)
        gout = torch.randn(out.shape).to(out.dtype)
        diff = [x for x in ins if x.requires_grad]
        grads = torch.autograd.grad(out, diff, gout)
        for i, x in enumerate(inputs):
            tensors[f"{name}.in.{i}"] = x
        tensors[f"{name}.out"] = out
        tensors[f"{name}.gout"] = gout
        gi = iter(grads)
        for i, x in enumerate(ins):
            if x.requires_grad:
                tensors[f"{name}.grad.{i}"] = next(gi)
    write("bf16_ops", tensors, {"ops": [c[0] for c in _bf16_op_cases()]})


@case("autocast_cpu_bf16")
def _():
    # A small conv net trained for 4 SGD steps under torch.autocast("cpu", bfloat16): float32
    # parameters, conv/linear in bf16, batch norm and pooling on bf16 activations, the loss in
    # float32 (autocast's float32 list), backward outside the region. The same run without
    # autocast (*_fp32 keys) measures what bf16 itself changes, the scale for the comparison.
    def net():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    model = net()
    ref = net()
    ref.load_state_dict(model.state_dict())
    tensors = {f"param.{k}": v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=False)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, foreach=False)
    losses, steps = [], 4
    for t in range(steps):
        x = torch.randn(6, 3, 8, 8)
        y = torch.randint(0, 5, (6,))
        tensors[f"in.{t}"] = x
        tensors[f"target.{t}"] = y
        opt.zero_grad()
        opt_ref.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
        loss.backward()
        F.cross_entropy(ref(x), y).backward()
        if t == 0:
            tensors["logits.0"] = logits
            for (k, p), p_ref in zip(model.named_parameters(), ref.parameters()):
                tensors[f"grad.0.{k}"] = p.grad.clone()
                tensors[f"grad_fp32.0.{k}"] = p_ref.grad.clone()
        opt.step()
        opt_ref.step()
        losses.append(loss.item())
    tensors["loss"] = torch.tensor(losses, dtype=torch.float32)
    for (k, v), v_ref in zip(model.state_dict().items(), ref.state_dict().values()):
        tensors[f"after.{k}"] = v.clone()
        tensors[f"after_fp32.{k}"] = v_ref.clone()
    write("autocast_cpu_bf16", tensors, {
        "model": "Conv2d(3,8,3,p=1),BatchNorm2d(8),ReLU,MaxPool2d(2),Flatten,Linear(128,5)",
        "autocast": "cpu/bfloat16", "loss": "cross_entropy", "optimizer": "SGD", "lr": 0.05,
        "momentum": 0.9, "steps": steps, "batch": [6, 3, 8, 8]})


def main(argv):
    global OUTDIR
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    OUTDIR = argv[1] if len(argv) > 1 else os.path.join(root, "tests", "golden")
    os.makedirs(OUTDIR, exist_ok=True)
    names = [n for n, _ in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for name, fn in CASES:
        torch.manual_seed(0)
        fn()
        path = os.path.join(OUTDIR, name + ".safetensors")
        tensors, meta = load_file(path)  # sanity: it reads back
        assert meta["case"] == name
        size = os.path.getsize(path)
        assert size < 64 * 1024, f"{name}: {size} bytes"
    print(f"wrote {len(CASES)} golden files to {OUTDIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
