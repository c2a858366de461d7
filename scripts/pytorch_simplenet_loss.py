#!/usr/bin/env python3
"""The first training steps of bitrobust's SimpleNet in PyTorch's Python API (Debian's python3-torch),
on CIFAR-10's data_batch_1, printing the mean loss every 25 steps. Used to check that a training
behaviour (e.g. GroupNorm SimpleNet at width 16 staying at chance level, docs/results.md) belongs
to the architecture and not to bitrobust.
Usage: pytorch_simplenet_loss.py [--norm gn|bn] [--width 16] [--lr 0.05] [--steps 150] [--init torch|reference]"""
import argparse
import gzip

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/datasets/cifar10/data_batch_1.bin.gz")
    ap.add_argument("--norm", default="gn", choices=["gn", "bn"])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--init", default="torch", choices=["torch", "reference"],
                    help="torch: PyTorch's default (kaiming uniform, a=sqrt(5)); reference: the reference's "
                         "kaiming normal (gain sqrt(2), fan in) with zero biases")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(1)
    raw = np.frombuffer(gzip.open(args.data).read(), dtype=np.uint8).reshape(-1, 3073)
    y = torch.from_numpy(raw[:, 0].astype(np.int64))
    x = torch.from_numpy(raw[:, 1:].astype(np.float32)).reshape(-1, 3, 32, 32) / 255
    x = (x - torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)) / torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    c = args.width
    # (out channels, kernel, max-pool after): the reference's SimpleNet (REFERENCE.md).
    spec = [(c, 3, 0), (2 * c, 3, 0), (2 * c, 3, 0), (2 * c, 3, 1), (2 * c, 3, 0), (2 * c, 3, 0), (4 * c, 3, 1),
            (4 * c, 3, 0), (4 * c, 3, 1), (8 * c, 3, 1), (32 * c, 1, 0), (4 * c, 1, 1), (4 * c, 3, 0)]
    layers, channels = [], 3
    for out, kernel, pool in spec:
        norm = nn.GroupNorm(min(32, out // 2), out) if args.norm == "gn" else nn.BatchNorm2d(out)
        layers += [nn.Conv2d(channels, out, kernel, padding=kernel // 2), norm, nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        channels = out
    net = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, 10))
    if args.init == "reference":
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    perm = torch.randperm(len(y))
    losses = []
    for step in range(args.steps):
        idx = perm[(step * 128) % (len(y) - 128):][:128]
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 25 == 0:
            print(f"{args.norm} width {c} lr {args.lr} init {args.init}: steps {step - 23}-{step + 1} mean loss {np.mean(losses[-25:]):.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
