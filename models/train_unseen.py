#!/usr/bin/env python3
"""Trains the two "unseen" test models: models/mobilenetv2_fm.onnx and models/vit_fm.onnx.

qtk's shared models are plain CNNs and an MLP; these two carry the patterns a
quantizer meets in practice and that those models lack:

* mobilenetv2_fm: MobileNetV2-style inverted residual blocks (1x1 expand,
  depthwise 3x3, 1x1 project, residual Add where shapes match), BatchNorm left
  unfused, ReLU6, stride-2 blocks, GlobalAveragePool, a linear head.
* vit_fm: a small ViT-style encoder: 7x7 patch embedding (Conv stride 7, 16
  tokens), learned position embedding, cls token, pre-LN encoder layers with
  LayerNormalization (one op at opset 17), multi-head self-attention written
  out as MatMul Q.K^T / Softmax / MatMul V, GELU MLP (Erf at opset 17), final
  LayerNorm and linear head.

Same recipe as models/train_default.py (Debian's python3-torch 1.13, fixed
seeds, AdamW + one-cycle, random horizontal flips), one thread by default:

    apt-get install -y python3-torch python3-onnx dataset-fashion-mnist
    /usr/bin/python3 models/train_unseen.py [mobilenetv2|vit|all]

Environment: THREADS (default 1), EPOCHS_MBV2 and EPOCHS_VIT (default 2 each:
one epoch took 7-19 min on the shared 2-core machine), WIDTH (MobileNetV2
width multiplier, default 0.5), WD (AdamW weight decay, default 0.05). The
model file is rewritten after every epoch; the last one is the result.
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
HERE = os.path.dirname(os.path.abspath(__file__))


def load_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


# ---- MobileNetV2-style ------------------------------------------------------

class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2FM(nn.Module):
    # (expand t, out channels c, repeats n, first stride s), the paper's table cut down for
    # 28x28 inputs: the stride-2 stem makes 14x14, then 7x7 and 4x4
    CFG = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 1), (4, 64, 2, 2), (4, 96, 1, 1)]

    def __init__(self, width=1.0, stride=2):
        super().__init__()
        ch = lambda c: max(8, int(round(c * width / 8)) * 8)
        cin = ch(16)
        layers = [nn.Conv2d(1, cin, 3, stride, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6()]
        for t, c, n, s in self.CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        last = ch(192)
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(last, 10)

    def forward(self, x):
        x = self.features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---- ViT-style --------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        split = lambda z: z.reshape(n, t, self.heads, self.hd).transpose(1, 2)  # N,H,T,hd
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * (self.hd ** -0.5), dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(n, t, d)
        return self.proj(y)


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ViTFM(nn.Module):
    def __init__(self, dim=64, depth=2, heads=4, mlp=128, patch=7):
        super().__init__()
        tokens = (28 // patch) ** 2
        self.embed = nn.Conv2d(1, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, mlp) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)  # N,T,D
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln(x[:, 0]))


# ---- training ---------------------------------------------------------------

def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def train(name, model, epochs, lr, data, opset, **export_kw):
    xtr, ytr, xte, yte = data
    torch.manual_seed(0)
    batch = 128
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(os.environ.get("WD", "0.05")))
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(0)
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters", file=sys.stderr)
    for epoch in range(epochs):
        model.train()
        t0, total = time.time(), 0.0
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            xb = xtr[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # horizontal flip augmentation
            xb[flip] = xb[flip].flip(3)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = accuracy(model, xte, yte)
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {total / len(xtr):.4f}, "
              f"test acc {acc:.4f}, {time.time() - t0:.0f} s", file=sys.stderr)
        # Written after every epoch: the last one is the model; earlier ones let a slow machine stop early.
        model.eval()
        out = os.path.join(HERE, name + ".onnx")
        torch.onnx.export(model, torch.zeros(1, 1, 28, 28), out, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=opset, **export_kw)
        print(f"wrote {out}: {params} parameters, epoch {epoch + 1}, test accuracy {acc:.4f}", flush=True)


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    np.random.seed(0)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    data = (torch.from_numpy(load_idx("train-images-idx3-ubyte.gz").astype(np.float32) / 255.0).unsqueeze(1),
            torch.from_numpy(load_idx("train-labels-idx1-ubyte.gz").astype(np.int64)),
            torch.from_numpy(load_idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0).unsqueeze(1),
            torch.from_numpy(load_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)))
    if which in ("mobilenetv2", "all"):
        torch.manual_seed(0)
        # BatchNorm left in (qtk folds it), like fmnist_small
        train("mobilenetv2_fm", MobileNetV2FM(width=float(os.environ.get("WIDTH", "0.5"))),
              int(os.environ.get("EPOCHS_MBV2", "2")), 4e-3, data, 13,
              do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    if which in ("vit", "all"):
        torch.manual_seed(0)
        # opset 17: LayerNormalization is one op
        train("vit_fm", ViTFM(), int(os.environ.get("EPOCHS_VIT", "2")), 2e-3, data, 17,
              do_constant_folding=True)


if __name__ == "__main__":
    main()
