#!/usr/bin/env node
// Runs an ONNX model in ONNX Runtime (CPU EP) on inputs from an .npz and writes
// the outputs to an .npz: the reference side of qtk's agreement test and of
// bench/compare_ort.sh.
//
//   node ort_run.mjs MODEL IN.npz OUT.npz [--threads N]
//   node ort_run.mjs MODEL IN [OUT.npz] --bench ITERS [--warmup W] [--threads N]
//
// IN is an .npz whose members are named after the model inputs, or
// `random:B` (seeded uniform [0,1) floats / zeros for integer inputs, every
// dynamic dimension set to B). --bench prints one JSON line
// {"median_ms","p10_ms","p90_ms","iters","threads"} over ITERS timed runs
// after the warm-up runs. --optimization LEVEL sets ORT's graph optimization
// level (default all; basic runs QDQ models without ORT's integer fusions,
// as the ONNX spec defines them). Exit status 0 on success, 1 with a message
// on stderr otherwise.
import { createRequire } from 'node:module';
import { readNpz, writeNpz, dtypeFromOrt } from './npz.mjs';
import { rng, sessionOptions } from './ort_common.mjs';

const require = createRequire(import.meta.url);

function usage(msg) {
  if (msg) process.stderr.write(`ort_run: ${msg}\n`);
  process.stderr.write(
    'usage: ort_run.mjs MODEL IN.npz|random:B [OUT.npz] [--threads N] [--bench ITERS] [--warmup W] [--optimization LEVEL]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { threads: 1, bench: 0, warmup: -1, optimization: 'all', positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) usage(`${a} needs a non-negative integer`);
      return v;
    };
    if (a === '--threads') opts.threads = num();
    else if (a === '--bench') opts.bench = num();
    else if (a === '--warmup') opts.warmup = num();
    else if (a === '--optimization') {
      opts.optimization = argv[++i];
      if (!['all', 'extended', 'basic', 'disabled'].includes(opts.optimization))
        usage('--optimization takes all, extended, basic or disabled');
    }
    else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else opts.positional.push(a);
  }
  const [model, input, output] = opts.positional;
  if (!model || !input || opts.positional.length > 3) usage();
  if (!output && !opts.bench) usage('OUT.npz is required unless --bench is given');
  return { ...opts, model, input, output };
}

function randomInputs(session, batch) {
  const next = rng(12345);
  const feeds = new Map();
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) throw new Error(`input '${meta.name}' is not a tensor`);
    const shape = meta.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : batch));
    const numel = shape.reduce((a, b) => a * b, 1);
    const d = dtypeFromOrt(meta.type);
    const data = new d.array(numel);
    if (meta.type === 'float32' || meta.type === 'float64') for (let i = 0; i < numel; i++) data[i] = next();
    feeds.set(meta.name, { dtype: meta.type, shape, data });
  }
  return feeds;
}

function percentile(sorted, p) {
  const pos = (sorted.length - 1) * p;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    throw new Error(`cannot load onnxruntime-node (run: ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix tests/ort): ${e.message}`);
  }
  const session = await ort.InferenceSession.create(opts.model, sessionOptions(opts.threads, opts.optimization));

  let arrays;
  const m = opts.input.match(/^random:(\d+)$/);
  if (m) arrays = randomInputs(session, Number(m[1]));
  else arrays = readNpz(opts.input);

  const feeds = {};
  for (const name of session.inputNames) {
    const a = arrays.get(name);
    if (!a) throw new Error(`${opts.input} has no array named '${name}' (model input)`);
    feeds[name] = new ort.Tensor(a.dtype, a.data, a.shape);
  }
  for (const name of arrays.keys())
    if (!session.inputNames.includes(name)) throw new Error(`model has no input named '${name}'`);

  let results = await session.run(feeds);

  if (opts.bench > 0) {
    const warmup = opts.warmup >= 0 ? opts.warmup : Math.max(3, Math.ceil(opts.bench / 10));
    for (let i = 0; i < warmup; i++) results = await session.run(feeds);
    const times = [];
    for (let i = 0; i < opts.bench; i++) {
      const t0 = process.hrtime.bigint();
      results = await session.run(feeds);
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    const r = (x) => Math.round(x * 1e4) / 1e4;
    process.stdout.write(JSON.stringify({
      median_ms: r(percentile(times, 0.5)),
      p10_ms: r(percentile(times, 0.1)),
      p90_ms: r(percentile(times, 0.9)),
      iters: opts.bench,
      threads: opts.threads,
    }) + '\n');
  }

  if (opts.output) {
    const out = [];
    for (const name of session.outputNames) {
      const t = results[name];
      out.push([name, { dtype: t.type, shape: t.dims.map(Number), data: t.data }]);
    }
    writeNpz(opts.output, out);
  }
  await session.release();
}

main().catch((e) => {
  process.stderr.write(`ort_run: ${e.message}\n`);
  process.exit(1);
});
