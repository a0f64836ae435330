#!/usr/bin/env python3
"""Sweep: every zoo model through qtk inspect / float run vs ORT / quantize variants
(ORT vs qtk float-QDQ vs qtk integer) / bench. usage: sweep.py [names...]
Environment: ZOO (folder holding models/ and work/, default /tmp/zoo), QTK, IRUN, ORT_RUN,
BENCH=0 (skip qtk bench), ORT_BASIC=1 (also ORT without its QDQ fusions), QTK_EXTRA (options appended to every qtk quantize)."""
import json, os, subprocess, sys, time
import numpy as np
Z = os.environ.get("ZOO", "/tmp/zoo"); M = Z + "/models"; W = Z + "/work"
QTK = os.environ.get("QTK", "build/qtk")
IRUN = os.environ.get("IRUN", Z + "/irun")
os.makedirs(W, exist_ok=True)
man = json.load(open(M + "/manifest.json"))
names = sys.argv[1:] or list(man)
VARIANTS = [
    ("int8", []),
    ("w4a4", ["--weights", "int4", "--activations", "uint4"]),
    ("wonly", ["--activations", "float"]),
    ("dyn", ["--activations", "dynamic"]),
    ("qop", ["--format", "qoperator"]),
    ("nbits", ["--weights", "int4", "--activations", "float", "--granularity", "group:32", "--format", "qoperator"]),
    ("w4ctr", ["--weights", "int4", "--activations", "uint4", "--int8-containers"]),
]
BENCH = os.environ.get("BENCH", "1") == "1"
ORT_BASIC = os.environ.get("ORT_BASIC", "0") == "1"  # also run each quantized file in ORT at --optimization basic
QEXTRA = os.environ.get("QTK_EXTRA", "").split()  # appended to every `qtk quantize` (e.g. "--granularity tensor")

def ensure_fm64():
    """ZOO/fm64.npy (the first 64 Fashion-MNIST test images, [64,1,28,28] in [0,1]) for
    the int8fm variant; written from the dataset when missing."""
    p = Z + "/fm64.npy"
    if os.path.exists(p): return
    import gzip
    d = os.environ.get("QTK_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
    raw = gzip.open(d + "/t10k-images-idx3-ubyte.gz").read()
    np.save(p, (np.frombuffer(raw, np.uint8, 64 * 784, 16).reshape(64, 1, 28, 28) / 255.0).astype(np.float32))

def sh(cmd, timeout=300):
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip(), time.time() - t
    except subprocess.TimeoutExpired:
        return 124, "TIMEOUT", time.time() - t

def load(p):
    d = np.load(p); return {k: d[k] for k in d.files}

def run_chunks(kind, model, inp, out, static, integer=False):
    """Runs model on inp (npz) in chunks of 2 if the batch is static; returns dict or error str."""
    d = load(inp); n = len(next(iter(d.values())))
    step = 2 if static else n
    outs = []
    for s in range(0, n, step):
        ci = f"{out}.in{s}.npz"; co = f"{out}.out{s}.npz"
        np.savez(ci, **{k: v[s:s + step] for k, v in d.items()})
        if kind in ("ort", "ortb"):
            rc, txt, _ = sh(["node", os.environ.get("ORT_RUN", "tests/ort/ort_run.mjs"), model, ci, co]
                            + (["--optimization", "basic"] if kind == "ortb" else []))
        else:
            rc, txt, _ = sh([IRUN, model, ci, co, "1" if integer else "0", "1"])
        if rc != 0:
            return "rc=%d %s" % (rc, txt.splitlines()[-1][:300] if txt else "")
        outs.append(load(co))
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

def cmp(a, b):
    a = a.astype(np.float64).ravel(); b = b.astype(np.float64).ravel()
    if a.shape != b.shape: return dict(shape_mismatch=True)
    scale = max(np.abs(b).max(), 1e-12)
    nan = int(np.isnan(a).sum() + np.isnan(b).sum())
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return dict(maxabs=float(np.nanmax(np.abs(a - b))), rel=float(np.nanmax(np.abs(a - b)) / scale), corr=corr, nan=nan)

res = {}
for name in names:
    info = man[name]; static = not info["dynamic"]
    mp = f"{M}/{name}.onnx"; ev = f"{M}/{name}.eval.npz"
    r = res[name] = {}
    rc, txt, _ = sh([QTK, "inspect", mp])
    r["inspect"] = "ok" if rc == 0 else "ERR rc=%d %s" % (rc, txt[-300:])
    fo = run_chunks("ort", mp, ev, f"{W}/{name}.f.ort", static)
    fq = run_chunks("qtk", mp, ev, f"{W}/{name}.f.qtk", static)
    if isinstance(fo, str) or isinstance(fq, str):
        r["float"] = dict(ort=fo if isinstance(fo, str) else "ok", qtk=fq if isinstance(fq, str) else "ok")
    else:
        r["float"] = cmp(fq["y"], fo["y"])
    calib = ["--calib", f"{M}/{name}.calib.npz", "--calib-samples", "64"]
    variants = list(VARIANTS)
    if info["fashion"]:
        variants.append(("int8fm", ["--calib", "fashion-mnist:train", "--calib-samples", "256"]))
        ensure_fm64()
    for vn, extra in variants:
        qp = f"{W}/{name}.{vn}.onnx"
        args = [QTK, "quantize", mp, "-o", qp, "--force", "--threads", "1"] + (extra if vn == "int8fm" else calib + extra) + QEXTRA
        rc, txt, dt = sh(args)
        if rc != 0:
            r[vn] = "QERR rc=%d %s" % (rc, txt.splitlines()[-1][:300] if txt else ""); continue
        inp = ev
        if vn == "int8fm":
            inp = f"{W}/fm16.npz"; np.savez(inp, x=np.load(Z + "/fm64.npy")[:16])
            fo2 = run_chunks("ort", mp, inp, f"{W}/{name}.fm.f.ort", static)
            ref = fo2["y"] if not isinstance(fo2, str) else None
        else:
            ref = None if isinstance(fo, str) else fo["y"]
        qo = run_chunks("ort", qp, inp, f"{W}/{name}.{vn}.ort", static)
        qf = run_chunks("qtk", qp, inp, f"{W}/{name}.{vn}.qf", static)
        qi = run_chunks("qtk", qp, inp, f"{W}/{name}.{vn}.qi", static, integer=True)
        e = dict(qsec=round(dt, 1))
        for lab, x in (("ort", qo), ("qtkf", qf), ("qtki", qi)):
            if isinstance(x, str): e[lab + "_err"] = x
        if not isinstance(qi, str) and not isinstance(qo, str): e["int_vs_ort"] = cmp(qi["y"], qo["y"])
        if not isinstance(qf, str) and not isinstance(qo, str): e["qf_vs_ort"] = cmp(qf["y"], qo["y"])
        if ref is not None:
            if not isinstance(qo, str): e["ort_vs_float"] = cmp(qo["y"], ref)
            if not isinstance(qi, str): e["int_vs_float"] = cmp(qi["y"], ref)
        if ORT_BASIC and not isinstance(qi, str):
            # ONNX Runtime without its QDQ fusions (the ONNX spec's QDQ semantics), to tell
            # a fused-kernel difference or refusal from a disagreement about the file.
            qb = run_chunks("ortb", qp, inp, f"{W}/{name}.{vn}.ortb", static)
            if isinstance(qb, str): e["ortb_err"] = qb
            else: e["int_vs_ortb"] = cmp(qi["y"], qb["y"])
        r[vn] = e
    if BENCH and not isinstance(r.get("int8"), str):
        b = {}
        for bat in (1, 8):
            for th in (1, 2):
                if static and bat != 1: continue
                bb = 2 if static else bat
                for integer in (False, True):
                    m = f"{W}/{name}.int8.onnx" if integer else mp
                    rc, txt, _ = sh([QTK, "bench", m, "--batch", str(bb), "--threads", str(th), "--runs", "20", "--json"] + (["--integer"] if integer else []))
                    key = f"b{bat}t{th}{'i' if integer else 'f'}"
                    try: b[key] = round(json.loads(txt)["latency_ms"]["median"], 3)
                    except Exception: b[key] = "ERR " + txt[-200:]
        r["bench"] = b
    print(name, json.dumps(r), flush=True)
json.dump(res, open(W + "/results_%s.json" % ("_".join(names) if len(names) < 4 else "all"), "w"), indent=1)
