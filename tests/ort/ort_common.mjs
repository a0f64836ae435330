// What ort_run.mjs and ort_memory.mjs share: the session options every qtk
// comparison uses, and the seeded generator behind `random:B` inputs.

// CPU EP, `threads` intra-op threads, sequential execution, quiet logs.
export function sessionOptions(threads, optimization) {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: optimization,
    logSeverityLevel: 3,
  };
}

// Small deterministic generator (mulberry32) so random inputs repeat exactly.
export function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
