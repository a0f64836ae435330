#!/usr/bin/env python3
"""Trains qtk's bundled default model, models/fmnist_small.onnx.

A small Fashion-MNIST CNN (standard and depthwise-separable convolutions with
BatchNorm, ReLU and ReLU6, max pooling, a linear head), trained by the project
itself with Debian's python3-torch (1.13) so the quick start depends on nothing
outside this repository. Exported unfused (BatchNorm nodes stay) so that qtk's
own BatchNorm folding is exercised.

    apt-get install -y python3-torch python3-onnx dataset-fashion-mnist
    /usr/bin/python3 models/train_default.py            # ~2-3 min on 2 cores

Deterministic for a given torch build: fixed seeds, one thread order.
"""
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fmnist_small.onnx")


def load_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(32)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)  # depthwise
        self.b3 = nn.BatchNorm2d(32)
        self.pw = nn.Conv2d(32, 64, 1, bias=False)  # pointwise
        self.b4 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)  # 16x14x14
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)  # 32x7x7
        x = F.relu6(self.b3(self.dw(x)))
        x = F.relu(self.b4(self.pw(x)))
        return self.fc(torch.flatten(x, 1))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def main():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    xtr = torch.from_numpy(load_idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255.0).unsqueeze(1)
    ytr = torch.from_numpy(load_idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.from_numpy(load_idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0).unsqueeze(1)
    yte = torch.from_numpy(load_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))

    model = SmallNet()
    epochs, batch = int(os.environ.get("EPOCHS", "4")), 128
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        t0, total = time.time(), 0.0
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            xb = xtr[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # horizontal flip augmentation
            xb[flip] = xb[flip].flip(3)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(xtr):.4f}, test acc {accuracy(model, xte, yte):.4f}, "
              f"{time.time() - t0:.0f} s", file=sys.stderr)

    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), OUT, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=13,
                      do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    print(f"wrote {OUT}: test accuracy {accuracy(model, xte, yte):.4f}")


if __name__ == "__main__":
    main()
