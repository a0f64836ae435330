import json, sys, glob, os
res = {}
for f in sorted(glob.glob(os.environ.get('ZOO', '/tmp/zoo') + '/work/results_*.json')):
    res.update(json.load(open(f)))
if len(sys.argv) > 1:  # parse a log instead
    res = {}
    for line in open(sys.argv[1]):
        if line.startswith('{') or ' {' not in line: continue
        n, j = line.split(' ', 1)
        try: res[n] = json.loads(j)
        except Exception: pass
V = ["int8", "w4a4", "w4ctr", "wonly", "dyn", "qop", "nbits", "int8fm"]
def cell(v, e):
    if e is None: return "-"
    if isinstance(e, str): return "ERR"
    errs = [k for k in e if k.endswith("_err")]
    if errs:
        ib = e.get("int_vs_ortb")
        return "FAIL:" + ",".join(k[:-4] for k in errs) + (" basic:%.3f" % ib["rel"] if ib else "")
    flags = []
    io = e.get("int_vs_ort"); qf = e.get("qf_vs_ort"); of = e.get("ort_vs_float"); iF = e.get("int_vs_float")
    if io and (io["rel"] > 0.05 or io["nan"]): flags.append("int!=ort(%.3f)" % io["rel"])
    ib = e.get("int_vs_ortb")  # ORT_BASIC=1 sweeps: ORT without its QDQ fusions
    if ib and (flags or "ort_err" in e or ib["rel"] > 0.05): flags.append("basic:%.3f" % ib["rel"])
    if qf and qf["nan"]: flags.append("qf-nan")
    thr = 0.9 if v in ("w4a4", "w4ctr") else 0.99
    if of and not (of["corr"] >= thr): flags.append("collapse(%.3f)" % of["corr"])
    c = of["corr"] if of else float('nan')
    return ("ok c=%.4f d=%.3f" % (c, io["rel"] if io else -1)) if not flags else " ".join(flags)
print("| model | inspect | float vs ORT (rel) | " + " | ".join(V) + " | bench int/float (b1t1,b1t2,b8t1,b8t2) |")
print("|" + "---|" * (4 + len(V)))
for n, r in res.items():
    fl = r["float"]
    fs = ("%.1e" % fl["rel"]) if "rel" in fl else "ERR " + json.dumps(fl)[:80]
    b = r.get("bench", {})
    br = []
    for k in ("b1t1", "b1t2", "b8t1", "b8t2"):
        f, i = b.get(k + "f"), b.get(k + "i")
        br.append("%.2f" % (i / f) if isinstance(f, float) and isinstance(i, float) and f > 0 else ("-" if f is None else "E"))
    print("| %s | %s | %s | %s | %s |" % (n, r["inspect"][:40], fs, " | ".join(cell(v, r.get(v)) for v in V), ",".join(br)))
