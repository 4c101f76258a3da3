/** Tables (console and markdown) and the chart of the microbenchmark suite's results. */
import type { KernelRow } from './kernels';
import type { ConcurrencyRun } from './concurrency';
import type { E2eRun } from './sweep';
import { chartSvg, Panel, Series } from './svg';

export interface SuiteResult {
  suite: 'qwen-node microbenchmarks';
  version: 1;
  date: string;
  quick: boolean;
  runtimeS: number;
  machine: {
    hostname: string; cpuModel: string; cpuMHz: number | null; logicalCpus: number; memoryGB: number; os: string; node: string;
    loadavgStart: number[]; loadavgEnd: number[];
    /** share of the CPUs busy with other processes (and stolen) just before / after the run */
    othersBusyStart: number | null; othersBusyEnd: number | null;
  };
  /** dirty: uncommitted or untracked changes to the code (lib, cpp, cuda, build files, bench/run.js) */
  build: { commit: string; dirty: boolean | null };
  cpu: { isa: string; features: Record<string, boolean>; threads: number };
  cuda: { compiled: boolean; available: boolean; name: string; error: string };
  limits: {
    bandwidth: Array<{ label: string; gbs: number; samples?: number[]; at: string }>;
    peakProxy: Record<string, { gflops: number; shape: string; all: Array<{ shape: string; gflops: number }> }>;
    nominal: { note: string; fp32Gflops: number | null; amxBf16Gflops: number | null };
  };
  /** wall time of each part and the CPU share other processes took meanwhile (noisy-neighbour gauge) */
  sections: Array<{ name: string; seconds: number; othersBusy: number | null }>;
  kernels: KernelRow[];
  e2e: E2eRun[];
  /** concurrent generate() clients (lib/bench/concurrency.ts); may come from a later `--concurrency` run than the rest */
  concurrency?: { date: string; build: { commit: string; dirty: boolean | null }; runs: ConcurrencyRun[] } | null;
  notes: string[];
}

const MODES = ['fp32', 'bf16', 'cuda-bf16'] as const;

function fmtMs(ms: number | null): string {
  if (ms === null) return '—';
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toFixed(4);
}

function rate(r: KernelRow): string {
  if (r.ms === null) return '—';
  if (r.bound === 'compute') return `${(r.gflops ?? 0).toFixed(1)} GFLOP/s`;
  if (r.bound === 'memory') return `${(r.gbs ?? 0).toFixed(1)} GB/s`;
  if (r.extra?.usPerRow !== undefined) return `${r.extra.usPerRow.toFixed(0)} µs/row`;
  return r.extra?.mbPerS !== undefined ? `${r.extra.mbPerS.toFixed(2)} MB/s` : '';
}

function pct(r: KernelRow): string {
  if (r.ofLimit === null) return '—';
  const what = r.limitUnit === 'GB/s' ? 'BW' : 'peak';
  return `${(r.ofLimit * 100).toFixed(0)} % ${what}`;
}

interface Pivot {
  kernel: string;
  shape: string;
  method: string;
  byMode: Partial<Record<string, KernelRow>>;
}

function pivot(rows: KernelRow[]): Pivot[] {
  const out: Pivot[] = [];
  const index = new Map<string, Pivot>();
  for (const r of rows) {
    const key = `${r.kernel}|${r.shape}|${r.method}`;
    let p = index.get(key);
    if (!p) {
      p = { kernel: r.kernel, shape: r.shape, method: r.method, byMode: {} };
      index.set(key, p);
      out.push(p);
    }
    p.byMode[r.mode] = r;
  }
  return out;
}

function table(head: string[], body: string[][], md: boolean): string {
  if (md) {
    const line = (c: string[]) => `| ${c.join(' | ')} |`;
    return [line(head), line(head.map(() => '---')), ...body.map(line)].join('\n');
  }
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (c: string[]) => c.map((s, i) => (i < 2 ? s.padEnd(w[i]) : s.padStart(w[i]))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...body.map(line)].join('\n');
}

function kernelTable(rows: KernelRow[], md: boolean): string {
  const cpu = rows.filter((r) => r.mode !== 'js');
  const modes = MODES.filter((m) => cpu.some((r) => r.mode === m));
  const head = ['kernel', 'shape', 'method', ...modes.flatMap((m) => [`${m} ms`, `${m} rate`, `${m} %`])];
  const body = pivot(cpu).map((p) => [
    p.kernel, p.shape, p.method,
    ...modes.flatMap((m) => {
      const r = p.byMode[m];
      return r ? [fmtMs(r.ms), rate(r), pct(r)] : ['', '', ''];
    }),
  ]);
  return table(head, body, md);
}

function hostTable(rows: KernelRow[], md: boolean): string {
  const js = rows.filter((r) => r.mode === 'js');
  const body = js.map((r) => [r.kernel, r.shape, fmtMs(r.ms), rate(r), pct(r), r.kernel === 'tokenizer encode' ? r.note ?? '' : '']);
  return table(['kernel', 'case', 'ms', 'rate', '%', 'notes'], body, md);
}

function e2eTable(runs: E2eRun[], md: boolean): string {
  const ctxs = [...new Set(runs.flatMap((r) => r.points.map((p) => p.context)))].sort((a, b) => a - b);
  const head = ['context / prompt', ...runs.flatMap((r) => [`${r.mode} prefill tok/s`, `${r.mode} decode tok/s`])];
  const body = ctxs.map((c) => [
    String(c),
    ...runs.flatMap((r) => {
      const p = r.points.find((q) => q.context === c);
      if (!p) return ['', ''];
      const pp = p.prefill.ofPeak !== null ? `, ${(p.prefill.ofPeak * 100).toFixed(0)} % peak` : '';
      const dp = p.decode.ofReadBandwidth !== null ? `, ${(p.decode.ofReadBandwidth * 100).toFixed(0)} % BW` : '';
      return [
        `${p.prefill.tokPerS.toFixed(1)} (${p.prefill.gflops.toFixed(0)} GFLOP/s${pp})`,
        `${p.decode.tokPerS.toFixed(2)} (${p.decode.gbs.toFixed(1)} GB/s${dp})`,
      ];
    }),
  ]);
  return table(head, body, md);
}

function batchTable(runs: E2eRun[], md: boolean): string {
  const withBatch = runs.filter((r) => r.batch);
  const sizes = [...new Set(withBatch.flatMap((r) => r.batch!.points.map((p) => p.batchSize)))].sort((a, b) => a - b);
  const head = ['batch size', 'mean context', ...withBatch.flatMap((r) => [`${r.mode} decode tok/s (aggregate)`, `${r.mode} ms/step`])];
  const body = sizes.map((b) => [
    String(b),
    String(Math.round(withBatch.map((r) => r.batch!.points.find((q) => q.batchSize === b)).find((p) => p)?.context ?? 0)),
    ...withBatch.flatMap((r) => {
      const p = r.batch!.points.find((q) => q.batchSize === b);
      if (!p) return ['', ''];
      const pk = p.ofPeak !== null ? `, ${(p.ofPeak * 100).toFixed(0)} % peak` : '';
      return [
        `${p.tokPerS.toFixed(1)} (x${p.speedup.toFixed(2)}; ${p.gflops.toFixed(0)} GFLOP/s${pk})`,
        `${p.msPerStep.toFixed(1)}${Math.abs(p.meanSequencesPerStep - b) > 0.01 ? ` (${p.meanSequencesPerStep.toFixed(1)} seq/step!)` : ''}` +
          `${p.chained ? `; chained ${p.chained.msPerStep.toFixed(1)} = ${p.chained.tokPerS.toFixed(0)} tok/s` : ''}`,
      ];
    }),
  ]);
  return table(head, body, md);
}

const sec = (ms: number) => (ms >= 1000 ? `${(ms / 1e3).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

function concurrencyTable(run: ConcurrencyRun, md: boolean): string {
  const head = ['clients', 'tokens', 'wall s', 'aggregate tok/s', 'decode-only tok/s', 'seq/step', 'TTFT p50 / p99',
    'TPOT p50 / p99', 'loop delay p99', 'others busy'];
  const body = run.levels.map((l) => [
    String(l.concurrency), String(l.generatedTokens), l.wallS.toFixed(1),
    `${l.aggregateTokPerS.toFixed(1)} (x${(l.vsC1?.aggregate ?? 1).toFixed(2)})`,
    l.decode.tokPerS === null ? '—' : `${l.decode.tokPerS.toFixed(1)} (x${(l.vsC1?.decode ?? 1).toFixed(2)})`,
    l.steps.meanSequences.toFixed(1),
    `${sec(l.ttftMs.p50)} / ${sec(l.ttftMs.p99)}`,
    `${sec(l.tpotMs.p50)} / ${sec(l.tpotMs.p99)}`,
    `${l.eventLoopDelayMs.p99.toFixed(1)} ms`,
    busy(l.othersBusy),
  ]);
  return table(head, body, md);
}

function concurrencyCaption(r: SuiteResult, c: ConcurrencyRun): string {
  const bw = [c.readGBs.before, c.readGBs.after].map((g) => (g === null ? '?' : g.toFixed(1))).join(' / ');
  const cc = r.concurrency;
  const other = cc && cc.date.slice(0, 16) !== r.date.slice(0, 16)
    ? ` · separate run ${cc.date} at commit ${cc.build.commit}${cc.build.dirty ? ' (dirty tree)' : ''}` : '';
  return `${c.mode}, ${c.threads} threads: each client generate(${c.promptTokens}-token prompt, ${c.newTokens} new tokens, greedy); ` +
    `read bandwidth before / after ${bw} GB/s; ${c.seconds.toFixed(0)} s with load and warm-up${other}`;
}

const busy = (b: number | null) => (b === null ? '?' : `${(b * 100).toFixed(0)} %`);

function header(r: SuiteResult): string[] {
  const bw = r.limits.bandwidth.map((b) => `${b.gbs.toFixed(1)} (${b.label})`).join(', ');
  const peaks = Object.entries(r.limits.peakProxy).map(([m, p]) => `${m} ${p.gflops.toFixed(0)} GFLOP/s (${p.shape})`).join('; ') ||
    'not measured (kernels skipped)';
  return [
    `${r.date} · ${r.machine.cpuModel} · ${r.cpu.threads} threads · isa ${r.cpu.isa}` +
      `${r.cpu.features.amxBf16 ? ' + AMX-BF16' : ''} · commit ${r.build.commit}${r.build.dirty ? ' (dirty tree)' : ''}` +
      `${r.quick ? ' · --quick' : ''} · ${r.runtimeS.toFixed(0)} s`,
    `CPU share taken by other processes: before ${busy(r.machine.othersBusyStart)}, ` +
      `${r.sections.map((s) => `${s.name} ${busy(s.othersBusy)}`).join(', ')}, after ${busy(r.machine.othersBusyEnd)}`,
    `DRAM read bandwidth, GB/s (best of 2 x readBandwidth(1024 MB, ${r.cpu.threads})): ${bw}`,
    `Achieved-peak proxy (median of the 3 best GEMM rates of this run, probe shapes and gemm rows; not a theoretical peak): ${peaks}`,
    `Nominal peak: ${r.limits.nominal.fp32Gflops?.toFixed(0) ?? '?'} GFLOP/s fp32 FMA, ${r.limits.nominal.amxBf16Gflops?.toFixed(0) ?? '—'} GFLOP/s AMX bf16 (${r.limits.nominal.note})`,
  ];
}

export function renderText(r: SuiteResult): string {
  const out: string[] = ['', '== qwen-node microbenchmarks ==', ...header(r), ''];
  if (r.kernels.some((k) => k.mode !== 'js')) {
    out.push('Kernels (median ms per call; % of the measured limit: BW = DRAM read bandwidth, peak = achieved-peak proxy)');
    out.push(kernelTable(r.kernels, false), '');
  }
  if (r.kernels.some((k) => k.mode === 'js')) out.push('Host (JS) work', hostTable(r.kernels, false), '');
  if (r.e2e.length) {
    out.push('End to end (small preset, batch 1; prefill = fresh prompt of that length, decode = median step at that context)');
    out.push(e2eTable(r.e2e, false));
    out.push('');
  }
  if (r.e2e.some((e) => e.batch)) {
    const b = r.e2e.find((e) => e.batch)!.batch!;
    out.push(`Decode against batch size (B sequences at context ~${b.context}, one token each per step, batched)`);
    out.push(batchTable(r.e2e, false));
    for (const e of r.e2e) {
      if (e.batch) out.push(`  ${e.mode}: ${e.batch.sequences} prompts of ${e.batch.context} tokens prefilled together: ${e.batch.prefill.tokPerS.toFixed(1)} tok/s`);
    }
    out.push('');
  }
  for (const c of r.concurrency?.runs ?? []) {
    out.push(`Concurrent clients, ${concurrencyCaption(r, c)}`, concurrencyTable(c, false), '');
  }
  const low = r.kernels.filter((k) => k.ofLimit !== null && k.ofLimit < 0.25 && k.mode !== 'js');
  if (low.length) {
    out.push('Far below the limit (< 25 %):');
    for (const k of low) out.push(`  ${k.mode} ${k.kernel} ${k.shape}: ${rate(k)} = ${pct(k)}`);
    out.push('');
  }
  for (const n of r.notes) out.push(`note: ${n}`);
  return out.join('\n');
}

export function renderMarkdown(r: SuiteResult): string {
  const out: string[] = ['## Benchmarks', '', ...header(r).map((l) => `${l}  `), ''];
  if (r.e2e.length) {
    out.push('### End to end (`small` preset, 0.92 B params, batch 1)', '');
    out.push(e2eTable(r.e2e, true), '');
    out.push('Prefill: a fresh prompt of that many tokens. Decode: median ms per token after it; GB/s counts the weights ' +
      'streamed per token plus the KV cache read.', '');
  }
  if (r.e2e.some((e) => e.batch)) {
    const b = r.e2e.find((e) => e.batch)!.batch!;
    out.push(`### Decode against batch size (context ~${b.context})`, '');
    out.push(batchTable(r.e2e, true), '');
    out.push(`B sequences at a context of ~${b.context} each forward one token, submitted together: continuous batching runs ` +
      'them as one native step of B tokens. Median wall ms per step; aggregate tok/s = B / step; (xN) against batch 1; ' +
      'GFLOP/s of all B tokens against the achieved-peak proxy. ' +
      r.e2e.filter((e) => e.batch).map((e) => `${e.mode}: the ${e.batch!.sequences} prompts of ${e.batch!.context} tokens prefilled together at ` +
        `${e.batch!.prefill.tokPerS.toFixed(1)} tok/s.`).join(' '), '');
  }
  if (r.concurrency?.runs.length) {
    out.push('### Concurrent clients (continuous batching)', '');
    for (const c of r.concurrency.runs) out.push(`${concurrencyCaption(r, c)}`, '', concurrencyTable(c, true), '');
    out.push('C clients call `model.generate()` at the same moment (distinct prompts, greedy, repetition penalty 1). ' +
      'Aggregate: all tokens / wall time, prefill and the main-thread sampling included. Decode-only: `onStep` decode ' +
      'tokens / native seconds of the steps without prompt tokens. (xN) against 1 client. TTFT from the common start; ' +
      'TPOT: gaps between consecutive tokens of a client, all clients pooled (a long gap = a prompt chunk of other ' +
      'clients shared that step). Loop delay: how late a 1 ms timer ran on the main thread.', '');
  }
  out.push('### Kernels', '');
  if (r.kernels.some((k) => k.mode !== 'js')) out.push(kernelTable(r.kernels, true), '');
  if (r.kernels.some((k) => k.mode === 'js')) out.push(hostTable(r.kernels, true), '');
  out.push('Methods: `cold` = linear with T <= 16 on weights not in cache (pool > LLC); `timeLinear` = the addon\'s own timing loop ' +
    '(weights hot); `call−null` = harness call minus the same call with no work and the output read-back; ' +
    '`in-engine Δ` = (decode step at context L − at context 8) / layers. Full data: `bench/results/latest.json`.', '');
  return out.join('\n');
}

export function renderSvg(r: SuiteResult): string {
  const colors: Record<string, string> = { fp32: '#1f77b4', bf16: '#ff7f0e', 'cuda-bf16': '#2ca02c' };
  const byBatch: Series[] = r.e2e.filter((e) => e.batch).map((e) => ({
    name: e.mode, color: colors[e.mode] ?? '#555', points: e.batch!.points.map((p) => [p.batchSize, p.tokPerS] as [number, number]),
  }));
  for (const c of r.concurrency?.runs ?? []) {
    byBatch.push({
      name: `${c.mode} clients`, color: colors[c.mode] ?? '#555', dash: '5 3',
      points: c.levels.filter((l) => l.decode.tokPerS !== null).map((l) => [l.concurrency, l.decode.tokPerS as number] as [number, number]),
    });
  }
  const batchCtx = r.e2e.find((e) => e.batch)?.batch?.context;
  const c0 = r.concurrency?.runs[0];
  const clientCtx = c0 ? `${c0.promptTokens}–${c0.promptTokens + c0.newTokens}` : null;
  const dec: Series[] = r.e2e.map((e) => ({
    name: e.mode, color: colors[e.mode] ?? '#555', points: e.points.map((p) => [p.context, p.decode.tokPerS] as [number, number]),
  }));
  const pre: Series[] = r.e2e.map((e) => ({
    name: e.mode, color: colors[e.mode] ?? '#555', points: e.points.map((p) => [p.context, p.prefill.tokPerS] as [number, number]),
  }));
  const panels: Panel[] = [
    { title: 'Decode (small preset, batch 1)', xLabel: 'context length (tokens)', yLabel: 'tokens / s', series: dec },
    {
      title: `Decode vs batch size${batchCtx ? ` (context ~${batchCtx})` : ''}`,
      xLabel: `batch size${clientCtx ? ` (dashed: C generate() clients, context ${clientCtx})` : ''}`, yLabel: 'tokens / s (aggregate)', series: byBatch,
    },
    { title: 'Prefill (small preset)', xLabel: 'prompt length (tokens)', yLabel: 'tokens / s', series: pre },
  ].filter((p) => p.series.some((s) => s.points.length > 0));
  return chartSvg(panels, `qwen-node ${r.build.commit} · ${r.machine.cpuModel} · ${r.cpu.threads} threads · ${r.date.slice(0, 10)}`);
}
