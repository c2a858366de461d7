#!/usr/bin/env python3
"""Training throughput of bitrobust's LeNet in PyTorch's Python API (Debian's python3-torch), for
comparison with `bitrobust train --model lenet`. Same layers, normalization, optimizer, batch size and
data (Fashion-MNIST, normalized, no augmentation); prints images per second of training steps."""
import argparse, gzip, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path, header):
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=header)


class LeNet(nn.Module):
    def __init__(self, c=32, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 5, padding=2)
        self.norm1 = nn.GroupNorm(min(32, c // 2), c)
        self.conv2 = nn.Conv2d(c, 2 * c, 5, padding=2)
        self.norm2 = nn.GroupNorm(min(32, c), 2 * c)
        self.fc1 = nn.Linear(2 * c * 7 * 7, 256)
        self.norm3 = nn.GroupNorm(32, 256)
        self.fc2 = nn.Linear(256, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.norm2(self.conv2(x))), 2)
        x = F.relu(self.norm3(self.fc1(x.flatten(1))))
        return self.fc2(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    images = read_idx(f"{args.data}/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(read_idx(f"{args.data}/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    x_all = (torch.from_numpy(images.astype(np.float32)) / 255 - 0.2860) / 0.3530
    net = LeNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    perm = torch.randperm(len(labels))
    def step(i):
        idx = perm[(i * args.batch) % (len(labels) - args.batch):][: args.batch]
        x, y = x_all[idx], labels[idx]
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    for i in range(10):
        step(i)
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    seconds = time.perf_counter() - start
    print(f"pytorch-python lenet: {args.steps * args.batch / seconds:.0f} images/s "
          f"({args.steps} steps of {args.batch}, {args.threads} threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
