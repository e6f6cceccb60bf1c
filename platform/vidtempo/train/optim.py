"""SGD with the parameter groups of MMAction2's TSM optimizer constructor
(mmaction/engine/optimizers/tsm_optim_wrapper_constructor.py).

Every group carries `lr_mult`; the schedule sets `group["lr"] = lr_mult × lr(step)` each step.

| group              | lr     | weight decay |
|--------------------|--------|--------------|
| first conv weight  | 1×     | 1×           |
| first conv bias    | 2×     | 0            |
| normal weights     | 1×     | 1×           |  other conv (1D/2D/3D) and Linear weights
| normal biases      | 2×     | 0            |
| BN / GN affine     | 1×     | 0            |
| last fc weight     | 5×     | 1×           |  fc_lr5 only (the docstring's "10× decay" is not
| last fc bias       | 10×    | 0            |  what the code does: the decay is 1×)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from vidtempo.config import OptimConfig

_NORMS = (_BatchNorm, nn.GroupNorm)


def param_groups(model: nn.Module, optim: OptimConfig) -> list[dict]:
    """Parameter groups in the constructor's order, each with `name`, `lr_mult` and
    `weight_decay`. Parameters that do not require grad (frozen BN) are left out."""
    wd = optim.weight_decay
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not optim.paramwise:
        return [{"name": "all", "params": trainable, "lr_mult": 1.0, "weight_decay": wd}]
    first_w, first_b, weights, biases, norms = [], [], [], [], []
    convs = 0
    for m in model.modules():
        if isinstance(m, _ConvNd | nn.Linear):
            if isinstance(m, _ConvNd):
                convs += 1
            w, b = (first_w, first_b) if convs == 1 and isinstance(m, _ConvNd) else (weights, biases)
            w.append(m.weight)
            if m.bias is not None:
                b.append(m.bias)
        elif isinstance(m, _NORMS):
            norms += [p for p in m.parameters(recurse=False)]
        elif not list(m.children()) and list(m.parameters(recurse=False)):
            raise TypeError(
                f"no learning-rate policy for parameters of {type(m).__name__}; "
                "add the module type to vidtempo.train.optim.param_groups"
            )
    fc_w, fc_b = [], []
    if optim.fc_lr5:
        # the last Linear/conv met is the classifier (heads are the last modules)
        fc_w.append(weights.pop())
        if biases:
            fc_b.append(biases.pop())
    groups = [
        ("first_conv_weight", first_w, 1.0, wd),
        ("first_conv_bias", first_b, 2.0, 0.0),
        ("normal_weight", weights, 1.0, wd),
        ("normal_bias", biases, 2.0, 0.0),
        ("norm", norms, 1.0, 0.0),
        ("fc_weight", fc_w, 5.0, wd),
        ("fc_bias", fc_b, 10.0, 0.0),
    ]
    out = [
        {"name": n, "params": [p for p in ps if p.requires_grad], "lr_mult": mult,
         "weight_decay": decay}  # fmt: skip
        for n, ps, mult, decay in groups
    ]
    grouped = {id(p) for g in out for p in g["params"]}
    stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in grouped]
    if stray:
        raise TypeError(f"parameters outside every optimizer group: {stray[:5]}")
    return [g for g in out if g["params"]]


def build_optimizer(model: nn.Module, optim: OptimConfig, lr: float) -> torch.optim.SGD:
    groups = param_groups(model, optim)
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum, nesterov=optim.nesterov)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
