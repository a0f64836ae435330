"""PyTorch side of bench/train_vs_torch.sh: the resnet20 of src/train/arch.cpp
(qtk train --arch resnet20) rebuilt layer for layer, timed per training step
(forward + cross-entropy + backward + optimizer step) on a fixed random batch.

Prints one "step_ms X" line per timed step and a summary line (median and fastest step):
  torch_train arch=resnet20 batch=64 threads=2 ... median_ms=... images_per_s=... min_ms=...
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout, k, stride, pad):
    # arch.cpp: Conv without bias, then BatchNormalization (eps 1e-5, ONNX
    # momentum 0.9 = torch momentum 0.1).
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))


class Block(nn.Module):
    def __init__(self, cin, c, stride):
        super().__init__()
        self.a = conv_bn(cin, c, 3, stride, 1)
        self.b = conv_bn(c, c, 3, 1, 1)
        # Shortcut: identity, or a strided 1x1 projection + BN when the shape changes.
        self.s = conv_bn(cin, c, 1, stride, 0) if stride != 1 or cin != c else None

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return F.relu(y + (self.s(x) if self.s is not None else x))


class ResNet20(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = conv_bn(1, 16, 3, 1, 1)
        blocks, cin = [], 16
        for stage in range(3):
            c = 16 << stage
            for block in range(3):
                blocks.append(Block(cin, c, 2 if stage > 0 and block == 0 else 1))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = ResNet20().train()
    if a.optimizer == "adamw":  # qtk's defaults: lr 1e-3, weight decay 0
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(a.batch, 1, 28, 28)
    labels = torch.randint(0, 10, (a.batch,))
    ms = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        t = (time.perf_counter() - t0) * 1000
        if s >= a.warmup:
            ms.append(t)
            print(f"step_ms {t:.3f} loss {loss.item():.4f}")
    med = statistics.median(ms)
    print(f"torch_train arch=resnet20 batch={a.batch} threads={a.threads} optimizer={a.optimizer} "
          f"median_ms={med:.3f} images_per_s={a.batch * 1000 / med:.1f} min_ms={min(ms):.3f} torch={torch.__version__}")


if __name__ == "__main__":
    main()
