#!/usr/bin/env python3
"""Exports a zoo of small, diverse, seeded-random PyTorch models to ONNX for
qtk's unseen-model robustness sweep. Writes /tmp/zoo/models/NAME.onnx plus
NAME.in.npz (inputs, batch 2) and NAME.calib.npy/.npz (64 calibration samples).
usage: /usr/bin/python3 make_zoo.py [OUTDIR] [--set 1|2|all] [names...]
--set 1 (default): the first 18 models; --set 2: the second batch (ZOO2);
--set all: both."""
import os, sys, json
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ARGV = sys.argv[1:]
SET = "1"
if "--set" in ARGV:
    k = ARGV.index("--set"); SET = ARGV[k + 1]; del ARGV[k:k + 2]
OUT = ARGV[0] if ARGV else "/tmp/zoo/models"
os.makedirs(OUT, exist_ok=True)


def randomize_bn(m, g):
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.3)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
        if isinstance(mod, (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)) and getattr(mod, "weight", None) is not None:
            mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.bias.shape, generator=g) * 0.2)


def cbr(i, o, k=3, s=1, p=1, g=1):
    return nn.Sequential(nn.Conv2d(i, o, k, s, p, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class UNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.e1 = cbr(1, 8); s.e2 = cbr(8, 16); s.e3 = cbr(16, 32)
        s.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        s.d1 = cbr(32, 16)
        s.d2 = cbr(24, 8)
        s.head = nn.Conv2d(8, 3, 1)
    def forward(s, x):
        a = s.e1(x)                      # 28
        b = s.e2(F.max_pool2d(a, 2))     # 14
        c = s.e3(F.max_pool2d(b, 2))     # 7
        d = s.d1(torch.cat([s.up1(c), b], 1))  # 14
        u = F.interpolate(d, scale_factor=2, mode="bilinear", align_corners=False)
        e = s.d2(torch.cat([u, a], 1))
        e = e + F.interpolate(F.avg_pool2d(e, 2), scale_factor=2, mode="nearest")
        return s.head(e)


class NormNet(nn.Module):  # GroupNorm / InstanceNorm / SiLU
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 16, 3, 2, 1); s.gn = nn.GroupNorm(4, 16)
        s.c2 = nn.Conv2d(16, 32, 3, 2, 1); s.inorm = nn.InstanceNorm2d(32, affine=True)
        s.fc = nn.Linear(32, 10)
    def forward(s, x):
        x = F.silu(s.gn(s.c1(x)))
        x = F.silu(s.inorm(s.c2(x)))
        return s.fc(x.mean((2, 3)))


class Audio1d(nn.Module):
    def __init__(s):
        super().__init__()
        s.c0 = nn.Conv1d(1, 16, 9, stride=2, padding=4)
        s.b0 = nn.BatchNorm1d(16)
        s.c1 = nn.Conv1d(16, 16, 3, padding=2, dilation=2)
        s.c2 = nn.Conv1d(16, 24, 3, padding=4, dilation=4)
        s.b2 = nn.BatchNorm1d(24)
        s.fc = nn.Linear(24, 6)
    def forward(s, x):
        x = F.leaky_relu(s.b0(s.c0(x)), 0.1)
        x = x + F.elu(s.c1(x))
        x = F.elu(s.b2(s.c2(x)))
        return s.fc(F.adaptive_avg_pool1d(x, 1).squeeze(-1))


class Shuffle(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = cbr(1, 16, 3, 2, 1)
        s.g1 = nn.Conv2d(16, 32, 1, groups=4, bias=False); s.b1 = nn.BatchNorm2d(32)
        s.dw = nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False); s.b2 = nn.BatchNorm2d(32)
        s.g2 = nn.Conv2d(32, 32, 1, groups=4)
        s.fc = nn.Linear(32, 10)
    def forward(s, x):
        x = s.stem(x)
        y = F.hardswish(s.b1(s.g1(x)))
        n, c, h, w = y.shape
        y = y.reshape(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        y = s.b2(s.dw(y))
        y = F.hardswish(s.g2(y)) + torch.cat([x, x], 1)
        return s.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


class SE(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = cbr(1, 16, 3, 2, 1)
        s.r = nn.Conv2d(16, 4, 1); s.e = nn.Conv2d(4, 16, 1)
        s.pr = nn.PReLU(16)
        s.c2 = nn.Conv2d(16, 24, 3, 2, 1)
        s.fc1 = nn.Linear(24, 6); s.fc2 = nn.Linear(6, 24)
        s.out = nn.Linear(24, 10)
    def forward(s, x):
        x = s.c1(x)
        w = F.hardsigmoid(s.e(F.relu(s.r(F.adaptive_avg_pool2d(x, 1)))))
        x = s.pr(x * w)
        x = s.c2(x)
        p = x.mean((2, 3))
        x = x * torch.sigmoid(s.fc2(F.relu(s.fc1(p))))[:, :, None, None]
        return s.out(x.mean((2, 3)))


class PoolPad(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 8, 3)
        s.c2 = nn.Conv2d(8, 16, 3)
        s.fc = nn.Linear(16 * 9, 10)
        s.fc2 = nn.Linear(16, 10)
    def forward(s, x):
        inp = x
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        x = F.gelu(s.c1(x), approximate="tanh")                           # 28
        x = F.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=True)  # 15
        x = F.pad(x, (2, 1, 0, 1), mode="replicate")
        x = F.relu(s.c2(x))                                               # 14x16
        x = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)  # 7x8
        x = F.avg_pool2d(x[:, :, 1:7, 2:8], 2)                             # 6x6 -> 3x3
        return s.fc(x.flatten(1)) + s.fc2(F.adaptive_avg_pool2d(inp, (4, 4)).flatten(1))


class Dense(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Conv2d(1, 8, 3, 1, 1)
        s.layers = nn.ModuleList()
        c = 8
        for _ in range(4):
            s.layers.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 6, 3, 1, 1)))
            c += 6
        s.trans = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 16, 1), nn.AvgPool2d(2))
        s.fc = nn.Linear(16, 10)
    def forward(s, x):
        x = s.stem(x)
        for l in s.layers:
            x = torch.cat([x, l(x)], 1)
        x = s.trans(x)
        return s.fc(F.adaptive_max_pool2d(x, 1).flatten(1))


class Encoder(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Linear(12, 32)
        s.layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, activation="gelu")
        s.fc = nn.Linear(32, 5)
    def forward(s, x, pad):
        h = s.layer(s.emb(x), src_key_padding_mask=pad)
        keep = (~pad).float().unsqueeze(-1)
        return s.fc((h * keep).sum(1) / keep.sum(1).clamp(min=1.0))


class LNMlp(nn.Module):
    def __init__(s):
        super().__init__()
        s.f1 = nn.Linear(784, 128); s.n1 = nn.LayerNorm(128)
        s.f2 = nn.Linear(128, 64); s.n2 = nn.LayerNorm(64)
        s.f3 = nn.Linear(64, 10)
    def forward(s, x):
        x = x.flatten(1)
        x = F.gelu(s.n1(s.f1(x)))
        x = x + F.gelu(s.n2(s.f2(x))).repeat(1, 2)[:, :64] if False else F.gelu(s.n2(s.f2(x)))
        return s.f3(x)


class TextCls(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Embedding(100, 24, padding_idx=0)
        s.fc1 = nn.Linear(24, 32); s.fc2 = nn.Linear(32, 4)
    def forward(s, ids):
        e = s.emb(ids)
        m = (ids != 0).unsqueeze(-1).float()
        v = (e * m).sum(1) / m.sum(1).clamp(min=1.0)
        return s.fc2(torch.tanh(s.fc1(v)))


class Einsum(nn.Module):
    def __init__(s):
        super().__init__()
        s.qkv = nn.Linear(16, 48)
        s.w = nn.Parameter(torch.randn(16, 16) * 0.25)
        s.out = nn.Linear(16, 3)
    def forward(s, x):                       # [N, 8, 16]
        q, k, v = s.qkv(x).chunk(3, dim=-1)
        a = torch.einsum("nld,nmd->nlm", q, k) / 4.0
        a = torch.softmax(a, dim=1)           # softmax over a non-last axis
        y = torch.einsum("nlm,nmd->nld", a, v)
        y = torch.matmul(y.unsqueeze(1), s.w)  # batch broadcast [N,1,8,16]@[16,16]
        y1, y2 = torch.split(y.squeeze(1), [6, 10], dim=-1)
        y = torch.cat([F.relu(y1), torch.sigmoid(y2)], -1)
        return s.out(y.mean(1))


class Mixer(nn.Module):
    def __init__(s):
        super().__init__()
        s.patch = nn.Conv2d(1, 32, 7, 7)      # 16 tokens
        s.blocks = nn.ModuleList()
        for _ in range(2):
            s.blocks.append(nn.ModuleDict(dict(
                n1=nn.LayerNorm(32), t1=nn.Linear(16, 32), t2=nn.Linear(32, 16),
                n2=nn.LayerNorm(32), c1=nn.Linear(32, 64), c2=nn.Linear(64, 32))))
        s.norm = nn.LayerNorm(32); s.fc = nn.Linear(32, 10)
    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2)  # [N,16,32]
        for b in s.blocks:
            y = b["n1"](x).transpose(1, 2)
            x = x + b["t2"](F.gelu(b["t1"](y))).transpose(1, 2)
            x = x + b["c2"](F.gelu(b["c1"](b["n2"](x))))
        return s.fc(s.norm(x).mean(1))


class Masking(nn.Module):
    def __init__(s):
        super().__init__()
        s.c = nn.Conv2d(1, 8, 5, 2, 2)
        s.fc = nn.Linear(8 * 14 * 14, 10)
    def forward(s, x):
        y = s.c(x)
        mx = y.amax(1, keepdim=True)
        m = torch.eq(y, mx.expand_as(y))
        y = torch.where(m, y, y * 0.1)
        y = torch.where(y > 0.5, torch.full_like(y, 0.5), y)
        return s.fc(y.flatten(1))


class Acts(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 12, 3, 2, 1); s.b1 = nn.BatchNorm2d(12)
        s.c2 = nn.Conv2d(12, 24, 3, 2, 1); s.b2 = nn.BatchNorm2d(24)
        s.pr = nn.PReLU()
        s.fc = nn.Linear(24, 10)
    def forward(s, x):
        x = F.hardswish(s.b1(s.c1(x)))
        x = F.silu(s.b2(s.c2(x)))
        x = s.pr(F.elu(x, 0.5)) + F.leaky_relu(x, 0.2)
        x = F.gelu(x)
        x = F.relu6(x) * F.hardsigmoid(x)
        return F.log_softmax(s.fc(x.mean((2, 3))), dim=1)


class Resize(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 8, 3, 2, 1)
        s.c2 = nn.Conv2d(8, 8, 3, 1, 1)
        s.c3 = nn.Conv2d(8, 4, 3, 1, 1)
    def forward(s, x):
        y = F.relu(s.c1(x))                   # 14
        a = F.interpolate(y, size=(28, 28), mode="bilinear", align_corners=True)
        b = F.upsample(y, scale_factor=2, mode="nearest")
        z = F.relu(s.c2(a + b))
        z = F.interpolate(z, size=(20, 20), mode="bilinear", align_corners=False)
        z = F.interpolate(z, scale_factor=1.5, mode="nearest")   # 30
        return s.c3(z)


class Conv1dGrouped(nn.Module):   # Conv1d depthwise + Transpose + LN on time axis
    def __init__(s):
        super().__init__()
        s.inp = nn.Conv1d(8, 32, 1)
        s.dw = nn.Conv1d(32, 32, 5, padding=2, groups=32)
        s.ln = nn.LayerNorm(32)
        s.fc = nn.Linear(32, 4)
    def forward(s, x):                   # [N, 8, 50]
        y = F.glu(s.inp(x), dim=1)        # 16 channels
        y = torch.cat([y, y], 1)
        y = F.silu(s.dw(y)).transpose(1, 2)
        y = s.ln(y)
        return s.fc(y.max(1).values)


# ---- second batch (--set 2) ------------------------------------------------

class SqExc(nn.Module):   # squeeze-excitation with SiLU and sigmoid gating (EfficientNet)
    def __init__(s, c, r):
        super().__init__()
        s.r = nn.Conv2d(c, r, 1); s.e = nn.Conv2d(r, c, 1)
    def forward(s, x):
        return x * torch.sigmoid(s.e(F.silu(s.r(F.adaptive_avg_pool2d(x, 1)))))


class MBConv(nn.Module):
    def __init__(s, i, o, stride, expand=4):
        super().__init__()
        h = i * expand
        s.res = stride == 1 and i == o
        s.ex = nn.Sequential(nn.Conv2d(i, h, 1, bias=False), nn.BatchNorm2d(h), nn.SiLU())
        s.dw = nn.Sequential(nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.SiLU())
        s.se = SqExc(h, max(1, i // 4))
        s.pr = nn.Sequential(nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o))
    def forward(s, x):
        y = s.pr(s.se(s.dw(s.ex(x))))
        return x + y if s.res else y


class EffNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())  # 14
        s.b1 = MBConv(16, 16, 1); s.b2 = MBConv(16, 24, 2); s.b3 = MBConv(24, 24, 1)          # 7
        s.head = nn.Sequential(nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.SiLU())
        s.drop = nn.Dropout(0.2); s.fc = nn.Linear(64, 10)
    def forward(s, x):
        x = s.head(s.b3(s.b2(s.b1(s.stem(x)))))
        return s.fc(s.drop(F.adaptive_avg_pool2d(x, 1).flatten(1)))


def channel_shuffle(x, g):
    n, c, h, w = x.shape
    return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV2Unit(nn.Module):
    def __init__(s, i, o, stride):
        super().__init__()
        s.stride = stride
        b = o // 2
        bi = i if stride == 2 else i // 2
        if stride == 2:
            s.br1 = nn.Sequential(nn.Conv2d(i, i, 3, 2, 1, groups=i, bias=False), nn.BatchNorm2d(i),
                                  nn.Conv2d(i, b, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
        s.br2 = nn.Sequential(nn.Conv2d(bi, b, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(),
                              nn.Conv2d(b, b, 3, stride, 1, groups=b, bias=False), nn.BatchNorm2d(b),
                              nn.Conv2d(b, b, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
    def forward(s, x):
        if s.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            y = torch.cat((x1, s.br2(x2)), 1)
        else:
            y = torch.cat((s.br1(x), s.br2(x)), 1)
        return channel_shuffle(y, 2)


class ShuffleV2(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = cbr(1, 16)
        s.u1 = ShuffleV2Unit(16, 32, 2); s.u2 = ShuffleV2Unit(32, 32, 1); s.u3 = ShuffleV2Unit(32, 32, 1)
        s.conv = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        s.fc = nn.Linear(64, 10)
    def forward(s, x):
        x = F.max_pool2d(s.stem(x), 3, 2, 1)                     # 14
        x = s.conv(s.u3(s.u2(s.u1(x))))                          # 7
        return s.fc(x.mean((2, 3)))


class Fire(nn.Module):
    def __init__(s, i, sq, e1, e3):
        super().__init__()
        s.sq = nn.Conv2d(i, sq, 1); s.e1 = nn.Conv2d(sq, e1, 1); s.e3 = nn.Conv2d(sq, e3, 3, padding=1)
    def forward(s, x):
        x = F.relu(s.sq(x))
        return torch.cat([F.relu(s.e1(x)), F.relu(s.e3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 32, 3, 2)                            # 13
        s.f1 = Fire(32, 8, 16, 16); s.f2 = Fire(32, 8, 16, 16); s.f3 = Fire(32, 16, 32, 32)
        s.drop = nn.Dropout(0.5); s.cls = nn.Conv2d(64, 10, 1)
    def forward(s, x):
        x = F.max_pool2d(F.relu(s.c1(x)), 3, 2, ceil_mode=True)  # 6
        x = s.f2(s.f1(x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)                 # 3
        x = s.f3(x)
        x = F.relu(s.cls(s.drop(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class LayerNormCF(nn.Module):  # ConvNeXt's channels-first LayerNorm, written out
    def __init__(s, c, eps=1e-6):
        super().__init__()
        s.w = nn.Parameter(torch.rand(c) + 0.5); s.b = nn.Parameter(torch.randn(c) * 0.2); s.eps = eps
    def forward(s, x):
        u = x.mean(1, keepdim=True)
        v = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(v + s.eps)
        return s.w[:, None, None] * x + s.b[:, None, None]


class ConvNeXtBlock(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        s.ln = nn.LayerNorm(c, eps=1e-6)
        s.f1 = nn.Linear(c, 4 * c); s.f2 = nn.Linear(4 * c, c)
        s.gamma = nn.Parameter(torch.rand(c) * 0.5 + 0.1)       # layer scale (1e-6 at init in the paper)
    def forward(s, x):
        y = s.dw(x).permute(0, 2, 3, 1)
        y = s.f2(F.gelu(s.f1(s.ln(y))))
        return x + (s.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Conv2d(1, 32, 4, 4); s.sn = LayerNormCF(32)   # 7
        s.b1 = ConvNeXtBlock(32); s.b2 = ConvNeXtBlock(32)
        s.norm = nn.LayerNorm(32); s.fc = nn.Linear(32, 10)
    def forward(s, x):
        x = s.b2(s.b1(s.sn(s.stem(x))))
        return s.fc(s.norm(x.mean((-2, -1))))


class TCN(nn.Module):   # dilated causal Conv1d, residual, global average
    def __init__(s):
        super().__init__()
        s.inp = nn.Conv1d(4, 16, 1)
        s.convs = nn.ModuleList()
        for d in (1, 2, 4):
            s.convs.append(nn.ModuleList([nn.Conv1d(16, 16, 3, dilation=d), nn.Conv1d(16, 16, 3, dilation=d, padding=2 * d)]))
        s.fc = nn.Linear(16, 3)
    def forward(s, x):                      # [N, 4, 64]
        x = s.inp(x)
        for i, (ca, cb) in enumerate(s.convs):
            d = 2 ** i
            y = F.relu(ca(F.pad(x, (2 * d, 0))))       # causal: left padding
            y = F.relu(cb(y)[:, :, :-2 * d])           # causal: pad both sides, drop the tail
            x = F.relu(x + y)
        return s.fc(x.mean(-1))


class BiLSTM(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Embedding(100, 16, padding_idx=0)
        s.lstm = nn.LSTM(16, 24, num_layers=2, bidirectional=True, batch_first=True)
        s.fc = nn.Linear(48, 4)
    def forward(s, ids):
        h, _ = s.lstm(s.emb(ids))
        return s.fc(h[:, -1, :])


class ViTBlock(nn.Module):
    def __init__(s, d, heads):
        super().__init__()
        s.n1 = nn.LayerNorm(d); s.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        s.n2 = nn.LayerNorm(d); s.f1 = nn.Linear(d, 2 * d); s.f2 = nn.Linear(2 * d, d)
    def forward(s, x):
        h = s.n1(x)
        x = x + s.attn(h, h, h, need_weights=False)[0]
        return x + s.f2(F.gelu(s.f1(s.n2(x))))


class ViT(nn.Module):
    def __init__(s):
        super().__init__()
        s.patch = nn.Conv2d(1, 32, 7, 7)                       # 16 patches
        s.cls = nn.Parameter(torch.randn(1, 1, 32) * 0.5)
        s.pos = nn.Parameter(torch.randn(1, 17, 32) * 0.2)
        s.blocks = nn.Sequential(ViTBlock(32, 4), ViTBlock(32, 4))
        s.norm = nn.LayerNorm(32); s.head = nn.Linear(32, 10)
    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls.expand(x.shape[0], -1, -1), x], 1) + s.pos
        x = s.norm(s.blocks(x))
        return s.head(x[:, 0])


class SuperRes(nn.Module):   # ESPCN: convs, PixelShuffle (DepthToSpace), bicubic skip
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 32, 5, padding=2); s.c2 = nn.Conv2d(32, 16, 3, padding=1)
        s.c3 = nn.Conv2d(16, 4, 3, padding=1); s.ps = nn.PixelShuffle(2)
    def forward(s, x):                      # [N, 1, 14, 14] -> [N, 1, 28, 28]
        y = s.ps(s.c3(torch.tanh(s.c2(torch.tanh(s.c1(x))))))
        return y + F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)


class AutoEnc(nn.Module):
    def __init__(s):
        super().__init__()
        s.e1 = nn.Conv2d(1, 16, 3, 2, 1); s.e2 = nn.Conv2d(16, 32, 3, 2, 1); s.z = nn.Conv2d(32, 8, 1)
        s.d1 = nn.Conv2d(8, 16, 3, 1, 1); s.d2 = nn.Conv2d(16, 1, 3, 1, 1)
        s.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    def forward(s, x):
        z = s.z(F.relu(s.e2(F.relu(s.e1(x)))))             # 7
        y = F.relu(s.d1(s.up(z)))                          # 14
        return torch.sigmoid(s.d2(s.up(y)))                # 28


class Siamese(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 8, 3, 1, 1); s.c2 = nn.Conv2d(8, 16, 3, 1, 1)
        s.emb = nn.Linear(16 * 7 * 7, 32); s.head = nn.Linear(32, 1)
    def embed(s, x):
        x = F.max_pool2d(F.relu(s.c1(x)), 2)
        x = F.max_pool2d(F.relu(s.c2(x)), 2)
        return s.emb(x.flatten(1))
    def forward(s, a, b):
        ea, eb = s.embed(a), s.embed(b)
        return torch.cat([s.head(torch.abs(ea - eb)), F.cosine_similarity(ea, eb).unsqueeze(1)], 1)


class ActMLP(nn.Module):
    def __init__(s):
        super().__init__()
        s.f1 = nn.Linear(784, 128); s.b1 = nn.BatchNorm1d(128); s.p1 = nn.PReLU(128)
        s.f2 = nn.Linear(128, 64); s.b2 = nn.BatchNorm1d(64)
        s.f3 = nn.Linear(64, 64); s.f4 = nn.Linear(64, 32); s.f5 = nn.Linear(32, 10)
    def forward(s, x):
        x = s.p1(s.b1(s.f1(x.flatten(1))))
        x = s.b2(s.f2(x))
        x = x * F.hardsigmoid(x) + F.softplus(x)
        x = F.mish(s.f3(x))
        x = F.elu(s.f4(x)) + F.softsign(x[:, :32])
        return s.f5(F.hardtanh(x, -1.5, 1.5))


class RMSOps(nn.Module):   # hand-written RMSNorm, SwiGLU, clamps, broadcast batched MatMul
    def __init__(s):
        super().__init__()
        s.w = nn.Parameter(torch.rand(16) + 0.5)
        s.up = nn.Linear(16, 64)
        s.wh = nn.Parameter(torch.randn(4, 8, 8) * 0.3)         # per-head weight, broadcast over batch
        s.out = nn.Linear(16, 5)
    def forward(s, x):                                        # [N, 8, 16]
        ms = x.pow(2).mean(-1, keepdim=True)
        h = x / torch.sqrt(ms + 1e-5) * s.w
        a, b = s.up(h).chunk(2, dim=-1)
        g = a * F.silu(b)                                     # [N, 8, 32]
        g = torch.clamp(g, -3.0, 3.0)
        g = torch.minimum(g, torch.maximum(x.repeat(1, 1, 2), -g))
        q = g.reshape(g.shape[0], 8, 4, 8).transpose(1, 2)     # [N, 4, 8, 8]
        y = torch.matmul(q, s.wh)                              # [N,4,8,8] @ [4,8,8]
        att = torch.matmul(y, q.transpose(-1, -2)) / (8 ** 0.5)
        y = torch.matmul(torch.softmax(att, -1), q)            # [N,4,8,8]
        y1, y2 = torch.split(y.transpose(1, 2).reshape(y.shape[0], 8, 32), [16, 16], dim=-1)
        y = y1 / (y2.abs() + 1.0) + x.max(-1, keepdim=True).values
        return s.out(y.abs().pow(1.5).mean(1))


class Video3d(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv3d(3, 8, 3, padding=1, bias=False); s.b1 = nn.BatchNorm3d(8)
        s.c2 = nn.Conv3d(8, 16, 3, stride=(1, 2, 2), padding=1, bias=False); s.b2 = nn.BatchNorm3d(16)
        s.fc = nn.Linear(16, 5)
    def forward(s, x):                                        # [N, 3, 8, 16, 16]
        x = F.max_pool3d(F.relu(s.b1(s.c1(x))), 2)             # [N, 8, 4, 8, 8]
        x = F.relu(s.b2(s.c2(x)))                              # [N, 16, 4, 4, 4]
        return s.fc(F.adaptive_avg_pool3d(x, 1).flatten(1))


class ResNeXtBlock(nn.Module):
    def __init__(s, i, o, stride, groups=8):
        super().__init__()
        s.a = cbr(i, o, 1, 1, 0); s.b = cbr(o, o, 3, stride, 1, g=groups)
        s.c = nn.Sequential(nn.Conv2d(o, o, 1, bias=False), nn.BatchNorm2d(o))
        s.sc = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))
    def forward(s, x):
        return F.relu(s.c(s.b(s.a(x))) + s.sc(x))


class ResNeXt(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = cbr(1, 32, 3, 2, 1)                             # 14
        s.b1 = ResNeXtBlock(32, 64, 1); s.b2 = ResNeXtBlock(64, 64, 2)   # 7
        s.fc = nn.Linear(64, 10)
    def forward(s, x):
        return s.fc(F.adaptive_avg_pool2d(s.b2(s.b1(s.stem(x))), 1).flatten(1))


# name, module, input specs [(name, shape, dtype)], opset, dynamic batch, fashion-shaped
ZOO = [
    ("unet", UNet, [("x", (1, 28, 28), "f")], 13, True),
    ("normnet", NormNet, [("x", (1, 28, 28), "f")], 17, True),
    ("audio1d", Audio1d, [("x", (1, 256), "f")], 13, True),
    ("shuffle", Shuffle, [("x", (1, 28, 28), "f")], 13, False),
    ("senet", SE, [("x", (1, 28, 28), "f")], 17, True),
    ("poolpad", PoolPad, [("x", (1, 28, 28), "f")], 13, False),
    ("dense", Dense, [("x", (1, 28, 28), "f")], 17, True),
    ("encoder13", Encoder, [("x", (10, 12), "f"), ("pad", (10,), "b")], 13, True),
    ("encoder17", Encoder, [("x", (10, 12), "f"), ("pad", (10,), "b")], 17, False),
    ("lnmlp13", LNMlp, [("x", (1, 28, 28), "f")], 13, True),
    ("lnmlp17", LNMlp, [("x", (1, 28, 28), "f")], 17, True),
    ("textcls", TextCls, [("ids", (16,), "i")], 13, True),
    ("einsum", Einsum, [("x", (8, 16), "f")], 13, True),
    ("mixer", Mixer, [("x", (1, 28, 28), "f")], 17, True),
    ("masking", Masking, [("x", (1, 28, 28), "f")], 13, False),
    ("acts", Acts, [("x", (1, 28, 28), "f")], 17, True),
    ("resize", Resize, [("x", (1, 28, 28), "f")], 13, False),
    ("conv1dglu", Conv1dGrouped, [("x", (8, 50), "f")], 17, True),
]

# Second batch (--set 2): seeds offset by 100 from the first batch's.
ZOO2 = [
    ("effnet", EffNet, [("x", (1, 28, 28), "f")], 13, True),
    ("shufflev2", ShuffleV2, [("x", (1, 28, 28), "f")], 11, True),
    ("squeezenet", SqueezeNet, [("x", (1, 28, 28), "f")], 12, False),
    ("convnext", ConvNeXt, [("x", (1, 28, 28), "f")], 17, True),
    ("tcn", TCN, [("x", (4, 64), "f")], 13, True),
    ("bilstm", BiLSTM, [("ids", (12,), "i")], 13, True),
    ("vit", ViT, [("x", (1, 28, 28), "f")], 17, True),
    ("superres", SuperRes, [("x", (1, 14, 14), "f")], 13, True),
    ("autoenc", AutoEnc, [("x", (1, 28, 28), "f")], 13, True),
    ("siamese", Siamese, [("a", (1, 28, 28), "f"), ("b", (1, 28, 28), "f")], 13, True),
    ("actmlp", ActMLP, [("x", (1, 28, 28), "f")], 13, True),
    ("rmsops", RMSOps, [("x", (8, 16), "f")], 13, True),
    ("video3d", Video3d, [("x", (3, 8, 16, 16), "f")], 13, True),
    ("resnext", ResNeXt, [("x", (1, 28, 28), "f")], 17, False),
]


def make_inputs(specs, n, rs):
    out = {}
    for name, shape, dt in specs:
        if dt == "f":
            out[name] = rs.rand(n, *shape).astype(np.float32)
        elif dt == "i":
            a = rs.randint(1, 100, size=(n, *shape)).astype(np.int64)
            for r in range(n):
                a[r, rs.randint(4, shape[0]):] = 0  # trailing padding
            out[name] = a
        else:
            a = np.zeros((n, *shape), dtype=bool)
            for r in range(n):
                a[r, rs.randint(5, shape[0]):] = True  # padded tail
            out[name] = a
    return out


def main():
    only = ARGV[1:] or None
    sets = {"1": [(ZOO, 0)], "2": [(ZOO2, 100)], "all": [(ZOO, 0), (ZOO2, 100)]}[SET]
    todo = [(i + off, entry) for zoo, off in sets for i, entry in enumerate(zoo)]
    manifest = {}
    for i, (name, cls, specs, opset, dyn) in todo:
        if only and name not in only:
            continue
        torch.manual_seed(1000 + i)
        g = torch.Generator().manual_seed(2000 + i)
        m = cls()
        with torch.no_grad():
            randomize_bn(m, g)
        m.eval()
        rs = np.random.RandomState(3000 + i)
        ex = make_inputs(specs, 2, rs)
        args = tuple(torch.from_numpy(ex[s[0]]) for s in specs)
        names = [s[0] for s in specs]
        dyn_axes = {n: {0: "batch"} for n in names + ["y"]} if dyn else None
        path = os.path.join(OUT, name + ".onnx")
        # Exported with grad enabled: TransformerEncoderLayer's fused fast path
        # (not exportable) is skipped when parameters require grad.
        torch.onnx.export(m, args, path, input_names=names, output_names=["y"],
                          opset_version=opset, dynamic_axes=dyn_axes, do_constant_folding=True)
        ref = m(*args).detach().numpy()
        np.savez(os.path.join(OUT, name + ".in.npz"), **ex)
        np.save(os.path.join(OUT, name + ".torch.npy"), ref)
        cal = make_inputs(specs, 64, np.random.RandomState(4000 + i))
        if len(specs) == 1:
            np.save(os.path.join(OUT, name + ".calib.npy"), cal[names[0]])
        np.savez(os.path.join(OUT, name + ".calib.npz"), **cal)
        np.savez(os.path.join(OUT, name + ".eval.npz"), **make_inputs(specs, 16, np.random.RandomState(5000 + i)))
        manifest[name] = dict(opset=opset, dynamic=dyn, inputs=[(s[0], list(s[1]), s[2]) for s in specs],
                              fashion=specs[0][1] == (1, 28, 28) and len(specs) == 1)
        print(name, "ok", os.path.getsize(path))
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


main()
