#!/usr/bin/env node
// Resident memory of ONNX Runtime sessions (CPU EP), for bench/compare_ort.sh
// --memory: the counterpart of `qtk bench`'s session memory.
//
//   node ort_memory.mjs MODEL [--batch B] [--threads N] [--runs R] [--optimization LEVEL]
//
// Creates a session on MODEL, runs it R times on seeded random inputs (every
// dynamic dimension set to B), then does the same with a second session of
// the same model while the first is alive. The first session pays ONNX
// Runtime's one-off set-up (its environment, kernel registries, allocators);
// the second shows what each further session costs. For each, in bytes:
//   peak     the highest RSS from just before InferenceSession.create to the
//            end of the runs, over the RSS just before (VmHWM, reset first);
//   running  the RSS after the runs over the RSS just before.
// Prints one JSON line {"first":{"peak","running"},"second":{...},...}.
// Linux only (/proc/self/status, /proc/self/clear_refs). Exit status 0 on
// success, 1 with a message on stderr otherwise.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import { rng, sessionOptions } from './ort_common.mjs';

const require = createRequire(import.meta.url);

function usage(msg) {
  if (msg) process.stderr.write(`ort_memory: ${msg}\n`);
  process.stderr.write('usage: ort_memory.mjs MODEL [--batch B] [--threads N] [--runs R] [--optimization LEVEL]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { batch: 1, threads: 1, runs: 20, optimization: 'all', model: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) usage(`${a} needs a positive integer`);
      return v;
    };
    if (a === '--batch') opts.batch = num();
    else if (a === '--threads') opts.threads = num();
    else if (a === '--runs') opts.runs = num();
    else if (a === '--optimization') opts.optimization = argv[++i];
    else if (a.startsWith('--')) usage(`unknown option ${a}`);
    else if (opts.model) usage('one MODEL only');
    else opts.model = a;
  }
  if (!opts.model) usage();
  return opts;
}

// A "VmRSS:" / "VmHWM:" field of /proc/self/status in bytes.
function statusBytes(key) {
  const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
  if (!m) throw new Error(`no ${key} in /proc/self/status`);
  return Number(m[1]) * 1024;
}

// Seeded floats in [0, 1), as ort_run.mjs makes them; float32 inputs only.
function randomFeeds(ort, session, batch) {
  const next = rng(12345);
  const feeds = {};
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor || meta.type !== 'float32') throw new Error(`input '${meta.name}' is not a float32 tensor`);
    const shape = meta.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : batch));
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = next();
    feeds[meta.name] = new ort.Tensor('float32', data, shape);
  }
  return feeds;
}

async function measure(ort, opts) {
  global.gc?.();
  const before = statusBytes('VmRSS');
  fs.writeFileSync('/proc/self/clear_refs', '5');  // VmHWM := VmRSS
  const session = await ort.InferenceSession.create(opts.model, sessionOptions(opts.threads, opts.optimization));
  const feeds = randomFeeds(ort, session, opts.batch);
  for (let i = 0; i < opts.runs; i++) await session.run(feeds);
  const running = statusBytes('VmRSS') - before;
  const peak = Math.max(statusBytes('VmHWM'), statusBytes('VmRSS')) - before;
  return { session, result: { peak, running } };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const ort = require('onnxruntime-node');
  const first = await measure(ort, opts);
  const second = await measure(ort, opts);
  process.stdout.write(JSON.stringify({
    first: first.result, second: second.result, batch: opts.batch, threads: opts.threads, runs: opts.runs,
  }) + '\n');
  await second.session.release();
  await first.session.release();
}

main().catch((e) => {
  process.stderr.write(`ort_memory: ${e.message}\n`);
  process.exit(1);
});
