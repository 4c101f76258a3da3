/**
 * `npm run bench`: the microbenchmark suite. Per kernel (rmsnorm, rope, attention prefill/decode, swiglu, linear as
 * gemv and gemm on the `small` preset's shapes and the real 7B shapes, sampling, tokenizer) on the CPU in its default
 * fp32 mode and in dtype 'bf16' (AMX prefill GEMM), and on CUDA (bf16) where a device is available; then end to end
 * on the `small` random model: prefill tok/s against prompt length, decode tok/s against context length (batch 1) and
 * against batch size (lib/bench/sweep.ts); then concurrent generate() clients through continuous batching
 * (lib/bench/concurrency.ts; `--concurrency 1,4,16,64` runs only that part).
 * Each figure is a median, next to the limit measured in the same run (DRAM read bandwidth right before the
 * memory-bound kernels; an achieved-peak GEMM proxy for the compute-bound ones). Timings are printed, never asserted.
 *
 * Writes bench/results/latest.{json,md,svg} (or --out DIR). Entry: bench/run.js.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseArgs } from 'util';
import { cachedRandom } from '../cli';
import { addon } from '../native/binding';
import {
  benchAttentionDecode, benchAttentionPrefill, benchElementwise, benchLinear, benchPick, benchSampling, benchTokenizer, CpuMode,
  finalize, KernelContext, KernelRow, Limits, measureBandwidth, peakProbe, QWEN7B_LINEARS, SMALL, smallLinears, withRates,
} from './kernels';
import { benchStepHost } from './stepHost';
import { ConcurrencyRun, runConcurrency } from './concurrency';
import { renderMarkdown, renderSvg, renderText, SuiteResult } from './report';
import { E2eRun, runSweep } from './sweep';
import { bf16Pool, LoadMeter, nowMs } from './timing';

const USAGE = `npm run bench [-- options]   (node bench/run.js [options])

  --quick            ~50 s: small shapes only, fewer repetitions, contexts 8 and 256, batch sizes 1-16 at context
                     32, concurrency 1,4,16 with 16 new tokens
  --threads N        CPU threads (default: all cores)
  --model DIR        checkpoint for the end-to-end and concurrency parts (default: the cached random --preset, bf16)
  --preset NAME      random checkpoint made once into the cache: tiny, small (default) or 7b
  --dtype LIST       CPU compute modes to run: fp32, bf16 or fp32,bf16 (default)
  --skip LIST        comma list of parts to skip: kernels, e2e, batch, concurrency, 7b, cuda
  --max-context N    end to end: longest prompt / context (default 4096; the fp32 prefill of 4096 takes ~1.5 min)
  --concurrency LIST run ONLY the concurrency part at these client counts (e.g. 1,4,16,64; ~70 s for both modes),
                     and replace the "concurrency" key of an existing latest.json in --out (the rest is kept)
  --new-tokens N     concurrency: tokens each client generates (default 32; 16 with --quick)
  --prompt-tokens N  concurrency: prompt length of each client (default 32)
  --out DIR          where latest.{json,md,svg} go (default: bench/results of this package)
  --help`;

function intList(v: string, name: string): number[] {
  const xs = v.split(',').map((x) => x.trim()).filter(Boolean).map(Number);
  if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x < 1)) throw new Error(`--${name} must be a comma list of positive integers (got ${v})`);
  return xs;
}

function posInt(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer (got ${v})`);
  return n;
}

function git(args: string[]): string | null {
  try {
    return execFileSync('git', args, { cwd: path.resolve(__dirname, '..', '..'), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** Others' CPU share while this process sleeps for `ms` (before / after the run). */
async function othersIdle(ms: number): Promise<number | null> {
  const m = new LoadMeter();
  await new Promise((r) => setTimeout(r, ms));
  return m.othersBusy();
}

function cpuMHz(): number | null {
  try {
    const m = /cpu MHz\s*:\s*([\d.]+)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return os.cpus()[0]?.speed ?? null;
  }
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' }, threads: { type: 'string' }, model: { type: 'string' }, skip: { type: 'string' },
      out: { type: 'string' }, 'max-context': { type: 'string' }, help: { type: 'boolean' },
      preset: { type: 'string' }, dtype: { type: 'string' }, concurrency: { type: 'string' },
      'new-tokens': { type: 'string' }, 'prompt-tokens': { type: 'string' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const quick = !!values.quick;
  const threads = values.threads === undefined ? os.availableParallelism() : Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads must be a positive integer (got ${values.threads})`);
  const skip = new Set((values.skip ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  const onlyConcurrency = values.concurrency !== undefined;
  const levels = onlyConcurrency ? intList(values.concurrency as string, 'concurrency') : quick ? [1, 4, 16] : [1, 4, 16, 64];
  if (onlyConcurrency) for (const p of ['kernels', 'e2e']) skip.add(p);
  const newTokens = posInt(values['new-tokens'], 'new-tokens', quick ? 16 : 32);
  const promptTokens = posInt(values['prompt-tokens'], 'prompt-tokens', 32);
  const preset = values.preset ?? 'small';
  if (!['tiny', 'small', '7b'].includes(preset)) throw new Error(`--preset must be tiny, small or 7b (got ${preset})`);
  const cpuModes = (values.dtype ?? 'fp32,bf16').split(',').map((x) => x.trim()).filter(Boolean) as CpuMode[];
  if (cpuModes.length === 0 || cpuModes.some((m) => m !== 'fp32' && m !== 'bf16')) throw new Error(`--dtype must list fp32 and/or bf16 (got ${values.dtype})`);
  const modelDir = async () => values.model ?? (await cachedRandom(preset as 'small', 'bf16', 1));
  const outDir = path.resolve(values.out ?? path.join(__dirname, '..', '..', 'bench', 'results'));
  const log = (s: string) => console.log(s);
  const tStart = nowMs();
  const loadStart = os.loadavg();

  const a = addon();
  const cpu = a.cpuInfo();
  const cuda = a.cudaInfo();
  const notes: string[] = [];
  const busyStart = await othersIdle(1000);
  const sections: SuiteResult['sections'] = [];
  const section = <T>(name: string, fn: () => Promise<T> | T): Promise<T> => {
    const meter = new LoadMeter(), t0 = nowMs();
    const done = () => {
      const others = meter.othersBusy();
      sections.push({ name, seconds: (nowMs() - t0) / 1e3, othersBusy: others });
      if (others !== null && others > 0.1) log(`  !! other processes used ${(others * 100).toFixed(0)} % of the CPUs during ${name}: its figures are noisy`);
    };
    return Promise.resolve().then(fn).finally(done);
  };
  log(`qwen-node microbenchmarks${quick ? ' (--quick)' : ''}: ${os.cpus()[0]?.model ?? 'cpu'}, isa ${cpu.isa}` +
    `${cpu.features.amxBf16 ? ' + AMX-BF16' : ''}, ${threads} threads; CUDA ${cuda.available ? cuda.name : 'not available'}`);

  const bandwidth: SuiteResult['limits']['bandwidth'] = [];
  const peakProxy: SuiteResult['limits']['peakProxy'] = {};
  const kernels: KernelRow[] = [];
  const e2e: E2eRun[] = [];
  const concurrency: ConcurrencyRun[] = [];

  // ---------------------------------------------------------------- kernels
  if (!skip.has('kernels')) {
    // Weight pool: > 2x the lm_head (467 MB) and > 2x the LLC this VM reports, so a gemv never re-reads a cached copy.
    const t = nowMs();
    const pool = bf16Pool(quick ? 1 << 30 : 1.25 * (1 << 30), 42);
    log(`weight pool ${(pool.length / 2 ** 30).toFixed(2)} GiB filled in ${((nowMs() - t) / 1e3).toFixed(1)} s`);
    const linearTs = [1, 16, 128, 512];
    const with7b = !quick && !skip.has('7b');
    for (const mode of cpuModes) {
      log(`\n-- CPU kernels, dtype '${mode}'${mode === 'bf16' ? (cpu.features.amxBf16 ? ' (AMX GEMM for T > 8)' : ' (no AMX: fp32 kernels on bf16-rounded inputs)') : ''}`);
      await section(`kernels ${mode}`, () => {
        const ctx: KernelContext = { ops: new a.NativeOps({ device: 'cpu', dtype: mode, threads }), mode, device: 'cpu', quick, log, pool };
        const peak = peakProbe(ctx);
        peakProxy[mode] = peak;
        log(`  peak probe: ${peak.gflops.toFixed(1)} GFLOP/s (${peak.shape})`);
        // Memory-bound group first, right after its bandwidth measurement.
        const bw = measureBandwidth(threads, `before ${mode} memory-bound kernels`, log);
        bandwidth.push(bw);
        const lim: Limits = { readGBs: bw.gbs, peakGflops: peak.gflops, fp32PeakGflops: peakProxy.fp32?.gflops ?? peak.gflops };
        kernels.push(...benchLinear(ctx, lim, smallLinears(SMALL), [1]));
        if (with7b) kernels.push(...benchLinear(ctx, lim, QWEN7B_LINEARS, [1]));
        kernels.push(...benchElementwise(ctx, lim, SMALL, [1, 512]));
        // L = 4096: in-engine row only (the harness's KV set-up costs ~50x the kernel there).
        kernels.push(...benchAttentionDecode(ctx, lim, SMALL, [256, 1024]));
        // Compute-bound group (T = 16 is cold and often memory-bound: the roofline decides).
        kernels.push(...benchLinear(ctx, lim, smallLinears(SMALL), linearTs.slice(1)));
        if (with7b) kernels.push(...benchLinear(ctx, lim, QWEN7B_LINEARS, linearTs.slice(1)));
        kernels.push(...benchAttentionPrefill(ctx, lim, SMALL, quick ? [128, 512] : [128, 256, 512]));
      });
    }
    if (cuda.available && !skip.has('cuda')) {
      // UNTESTED on the development machine (no GPU there): the same linear shapes through timeLinear on the CUDA
      // backend in bf16. No limit is measured for the GPU, so these rows carry no %.
      log(`\n-- CUDA kernels (bf16) on ${cuda.name} [code path untested on the development machine]`);
      await section('kernels cuda-bf16', () => {
        try {
          const ctx: KernelContext = {
            ops: new a.NativeOps({ device: 'cuda', dtype: 'bf16' }), mode: 'cuda-bf16', device: 'cuda', quick, log, pool,
          };
          kernels.push(...benchLinear(ctx, null, smallLinears(SMALL), linearTs));
          if (with7b) kernels.push(...benchLinear(ctx, null, QWEN7B_LINEARS, linearTs));
          notes.push('cuda-bf16 rows: linear through timeLinear (weights resident on the GPU, hot); no GPU limit is measured, so no %');
        } catch (e) {
          notes.push(`CUDA kernels failed: ${(e as Error).message}`);
          log(`  CUDA kernels failed: ${(e as Error).message}`);
        }
      });
    }
    finalize(kernels, peakProxy);
    for (const [m, p] of Object.entries(peakProxy)) log(`achieved-peak proxy, ${m}: ${p.gflops.toFixed(1)} GFLOP/s (${p.shape})`);
    log('\n-- host (JS) work');
    await section('host', async () => {
      const bw = measureBandwidth(threads, 'before sampling', log);
      bandwidth.push(bw);
      kernels.push(...benchSampling({ readGBs: bw.gbs, peakGflops: null, fp32PeakGflops: null }, quick, log));
      kernels.push(...benchPick(new a.NativeOps({ device: 'cpu', dtype: 'fp32', threads }), quick, log));
      kernels.push(...(await benchTokenizer(quick, log)));
      kernels.push(...(await benchStepHost(quick, log)));
    });
  }

  // ---------------------------------------------------------------- end to end
  if (!skip.has('e2e')) {
    const dir = await modelDir();
    const maxCtx = values['max-context'] === undefined ? 4096 : Number(values['max-context']);
    const contexts = (quick ? [8, 256] : [8, 128, 256, 512, 1024, 4096]).filter((c) => c <= maxCtx);
    const runs: Array<{ device: 'cpu' | 'cuda'; dtype: CpuMode; mode: string }> = cpuModes.map((m) => ({ device: 'cpu', dtype: m, mode: m }));
    if (cuda.available && !skip.has('cuda')) runs.push({ device: 'cuda', dtype: 'bf16', mode: 'cuda-bf16' });
    for (const r of runs) {
      log(`\n-- end to end, ${r.mode}: ${dir}${r.device === 'cuda' ? ' [CUDA: untested on the development machine]' : ''}`);
      await section(`e2e ${r.mode}`, async () => {
        try {
          const run = await runSweep({
            dir, device: r.device, dtype: r.dtype, mode: r.mode, threads, contexts, decodeSteps: quick ? 4 : 8,
            // 8 | 9+: the CPU backend's linear switches from its gemv (T <= 8) to its gemm kernels there.
            batchSizes: skip.has('batch') ? [] : quick ? [1, 4, 8, 16] : [1, 4, 8, 16, 32, 64], batchContext: quick ? 32 : 128,
            batchSteps: quick ? 4 : 8,
            peakGflops: peakProxy[r.mode]?.gflops ?? null, log,
          });
          e2e.push(run);
          if (run.readGBs !== null) bandwidth.push({ label: `before ${r.mode} decode sweep`, gbs: run.readGBs, at: new Date().toISOString() });
          kernels.push(...attentionInEngine(run));
        } catch (e) {
          if (r.device !== 'cuda') throw e;
          notes.push(`CUDA end to end failed: ${(e as Error).message}`);
        }
      });
    }
  }

  // ---------------------------------------------------------------- concurrency (continuous batching)
  if (!skip.has('concurrency')) {
    const dir = await modelDir();
    const runs: Array<{ device: 'cpu' | 'cuda'; dtype: CpuMode; mode: string }> = cpuModes.map((m) => ({ device: 'cpu', dtype: m, mode: m }));
    if (cuda.available && !skip.has('cuda')) runs.push({ device: 'cuda', dtype: 'bf16', mode: 'cuda-bf16' });
    for (const r of runs) {
      log(`\n-- concurrency, ${r.mode}: ${levels.join(', ')} clients x generate(${promptTokens}-token prompt, ${newTokens} new tokens, greedy)` +
        `${r.device === 'cuda' ? ' [CUDA: untested on the development machine]' : ''}`);
      await section(`concurrency ${r.mode}`, async () => {
        try {
          concurrency.push(await runConcurrency({
            dir, device: r.device, dtype: r.dtype, mode: r.mode, threads, levels, promptTokens, newTokens, log,
          }));
        } catch (e) {
          if (r.device !== 'cuda') throw e;
          notes.push(`CUDA concurrency failed: ${(e as Error).message}`);
        }
      });
    }
  }

  // ---------------------------------------------------------------- output
  const busyEnd = await othersIdle(500);
  const noisy = sections.filter((s) => s.othersBusy !== null && s.othersBusy > 0.1);
  if (busyStart !== null && busyStart > 0.1) notes.push(`other processes used ${(busyStart * 100).toFixed(0)} % of the CPUs just before the run`);
  if (noisy.length) {
    notes.push(`other processes used > 10 % of the CPUs during: ${noisy.map((s) => `${s.name} (${((s.othersBusy ?? 0) * 100).toFixed(0)} %)`).join(', ')}; those figures are noisy, rerun on a quiet machine`);
  }
  const commit = git(['rev-parse', '--short', 'HEAD']) ?? 'unknown';
  const status = git(['status', '--porcelain', '--', 'lib', 'cpp', 'cuda', 'CMakeLists.txt', 'binding.gyp', 'package.json', 'bench/run.js']);
  const mhz = cpuMHz();
  if (kernels.length) notes.push(
    'rmsnorm, rope, swiglu and attention are the same code in the fp32 and bf16 modes (dtype changes only the matmul ' +
      'inputs of linear), so their two columns are two measurements of one kernel.',
    'linear rows with T <= 16 read each call\'s weights from a different part of a pool larger than the LLC (cold, as ' +
      'in the model, whose weights exceed the LLC); T >= 128 rows use timeLinear (hot weights, x packing included). ' +
      '% for gemm is of the roofline min(peak proxy, AI x BW).',
  );
  if (e2e.some((e) => e.batch)) {
    notes.push('decode against batch size: B sequences at the batch context forward one token each, submitted together; ' +
      'the scheduler runs them as one native step of B tokens (seq/step shows it did). GB/s counts the weights once per ' +
      'step plus the B sequences\' KV reads; GFLOP/s all B tokens.');
  }
  if (concurrency.length) {
    notes.push('concurrency: C clients start generate() together (greedy, repetition penalty 1, distinct prompts); ' +
      'aggregate = all tokens / wall time (prefill, queueing and main-thread sampling included); decode-only = ' +
      'onStep decodeTokens / native seconds of the steps without prompt tokens; TTFT from the common start; TPOT = ' +
      'gaps between consecutive tokens of one client, pooled; event-loop delay = how late a 1 ms timer ran (excess over 1 ms).',
      ...concurrency.flatMap((c) => c.notes.map((n) => `concurrency ${c.mode}: ${n}`)));
  }
  const result: SuiteResult = {
    suite: 'qwen-node microbenchmarks', version: 1, date: new Date().toISOString(), quick,
    runtimeS: (nowMs() - tStart) / 1e3,
    machine: {
      hostname: os.hostname(), cpuModel: os.cpus()[0]?.model ?? 'unknown', cpuMHz: mhz, logicalCpus: os.cpus().length,
      memoryGB: os.totalmem() / 1e9, os: `${os.type()} ${os.release()} ${os.arch()}`, node: process.version,
      loadavgStart: loadStart, loadavgEnd: os.loadavg(), othersBusyStart: busyStart, othersBusyEnd: busyEnd,
    },
    build: { commit, dirty: status === null ? null : status.length > 0 },
    cpu: { isa: cpu.isa, features: cpu.features, threads },
    cuda: { compiled: cuda.compiled, available: cuda.available, name: cuda.name, error: cuda.error },
    limits: {
      bandwidth, peakProxy,
      nominal: {
        note: `for scale only, never used for %: ${mhz ?? '?'} MHz x ${threads} cores x 64 fp32 FLOP/cycle (2 AVX-512 FMA ports)` +
          `${cpu.features.amxBf16 ? ' and x 1024 bf16 FLOP/cycle (AMX TMUL)' : ''}; the port count and the AMX clock are assumptions`,
        fp32Gflops: mhz && cpu.isa === 'avx512' ? (mhz * threads * 64) / 1e3 : null,
        amxBf16Gflops: mhz && cpu.features.amxBf16 ? (mhz * threads * 1024) / 1e3 : null,
      },
    },
    sections, kernels, e2e,
    concurrency: concurrency.length ? { date: new Date().toISOString(), build: { commit, dirty: status === null ? null : status.length > 0 }, runs: concurrency } : null,
    notes,
  };
  fs.mkdirSync(outDir, { recursive: true });
  if (onlyConcurrency) {
    // Keep the kernels and end-to-end figures of the last full run; only the concurrency key (and its sections) change.
    const prev = readPrevious(path.join(outDir, 'latest.json'));
    if (prev) {
      prev.concurrency = result.concurrency;
      prev.sections = [...prev.sections.filter((x) => !x.name.startsWith('concurrency')), ...sections];
      prev.notes = [...prev.notes.filter((n) => !n.startsWith('concurrency')), ...notes.filter((n) => n.startsWith('concurrency'))];
      Object.assign(result, prev);
      log(`(kept the kernels and end-to-end figures of ${prev.date} in ${outDir}/latest.json; replaced its concurrency key)`);
    }
  }
  fs.writeFileSync(path.join(outDir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
  const md = renderMarkdown(result);
  fs.writeFileSync(path.join(outDir, 'latest.md'), md);
  const svg = result.e2e.length > 0 || (result.concurrency?.runs.length ?? 0) > 0;
  if (svg) fs.writeFileSync(path.join(outDir, 'latest.svg'), renderSvg(result));
  log(renderText(result));
  log('\n---- markdown (bench/results/latest.md) ----\n');
  log(md);
  log(`wrote ${path.join(outDir, 'latest.json')}, latest.md${svg ? ', latest.svg' : ''} in ${((nowMs() - tStart) / 1e3).toFixed(0)} s total`);
  return 0;
}

/** The suite result already in `file`, when it is one (of this version) with figures worth keeping. */
function readPrevious(file: string): SuiteResult | null {
  try {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as SuiteResult;
    if (r.suite !== 'qwen-node microbenchmarks' || r.version !== 1 || !Array.isArray(r.kernels) || !Array.isArray(r.e2e)) return null;
    // Results from before batched steps carry a sequential "batch" of another shape: drop it.
    for (const e of r.e2e) if (e.batch && !Array.isArray((e.batch as { points?: unknown }).points)) e.batch = null;
    r.notes = r.notes.filter((n) => !n.startsWith('end to end: batch size 1 only'));
    return r.kernels.length || r.e2e.length ? r : null;
  } catch {
    return null;
  }
}

/**
 * Attention decode as the engine runs it, from the decode sweep: (step at context L − step at context 8) / layers.
 * Every other op of a decode step is the same at both contexts, so the difference is the attention over L − 8 more
 * keys (plus their KV-cache traffic), per layer. Reported only where the difference exceeds 10 % of the step (on the
 * small preset: from about L = 1024), as shorter contexts differ by less than the noise of the medians.
 */
function attentionInEngine(run: E2eRun): KernelRow[] {
  const base = run.points.find((p) => p.context === 8);
  if (!base) return [];
  const { layers: L, hidden: H } = run.model;
  const rows: KernelRow[] = [];
  for (const p of run.points) {
    if (p.context < 256) continue;
    const delta = p.decode.msPerToken - base.decode.msPerToken;
    const resolved = delta > 0.1 * base.decode.msPerToken; // smaller differences are within the medians' noise
    const d = delta / L;
    const bytes = 2 * (p.context - 8) * H * run.kvBytesPerElem;
    rows.push(withRates({
      kernel: 'attention decode', shape: `T=1 · L=${p.context} keys · ${H / 128}x128 (Δ vs L=8)`,
      mode: run.mode as KernelRow['mode'], ms: resolved ? d : null, method: 'in-engine Δ', reps: p.decode.steps,
      bound: 'memory', bytes, flops: 4 * (p.context - 8) * H,
      note: resolved ? 'per layer, from the decode sweep'
        : `difference ${delta.toFixed(1)} ms < 10 % of the step at L=8: within the noise of the decode medians`,
    }, run.readGBs !== null ? { readGBs: run.readGBs, peakGflops: null, fp32PeakGflops: null } : null));
  }
  return rows;
}
