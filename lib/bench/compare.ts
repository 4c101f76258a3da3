/**
 * One table of several decode sweeps (lib/bench/sweep.ts) run on the same warm card with different switches: the GPU
 * check times each opt-in path (PDL, CUDA graphs, the skinny GEMM, the folded layer, ...) in its own process, and a
 * 15-minute device session needs the verdict at a glance, not from eight logs. Each run is labelled by what differs
 * from the baseline (the first run): its QWEN_* environment and its backend switches. Every figure is shown with its
 * ratio to the baseline's same figure (> 1: faster), so a default can be flipped from this table alone.
 */
import type { E2eRun } from './sweep';

export interface LabelledRun {
  /** where the run came from (a file name), shown when the switches do not tell runs apart */
  name: string;
  run: E2eRun;
}

/** A figure of a run: batch-1 decode tok/s at a context, or aggregate tok/s at a batch size. */
interface Column {
  title: string;
  value: (r: E2eRun) => number | null;
  /** the mean context the figure was measured at (batch columns): a cell measured elsewhere says where */
  context?: (r: E2eRun) => number | null;
}

function columns(runs: E2eRun[]): Column[] {
  const contexts = [...new Set(runs.flatMap((r) => r.points.map((p) => p.context)))].sort((a, b) => a - b);
  const batches = [...new Set(runs.flatMap((r) => r.batch?.points.map((p) => p.batchSize) ?? []))].sort((a, b) => a - b);
  return [
    ...contexts.map((c) => ({
      title: `bs 1, prompt ${c}: tok/s`,
      value: (r: E2eRun) => r.points.find((p) => p.context === c)?.decode.tokPerS ?? null,
    })),
    ...batches.map((b) => ({
      title: `bs ${b} at ~${runs.find((r) => r.batch)?.batch?.context ?? '?'}: tok/s`,
      value: (r: E2eRun) => r.batch?.points.find((p) => p.batchSize === b)?.tokPerS ?? null,
      context: (r: E2eRun) => r.batch?.points.find((p) => p.batchSize === b)?.context ?? null,
    })),
    // the largest batch again, chained as generate() runs it (overlapped steps): the batch goal's real-use figure
    ...batches.slice(-1).filter((b) => runs.some((r) => r.batch?.points.find((p) => p.batchSize === b)?.chained)).map((b) => ({
      title: `bs ${b} chained: tok/s`,
      value: (r: E2eRun) => r.batch?.points.find((p) => p.batchSize === b)?.chained?.tokPerS ?? null,
    })),
  ];
}

/** What makes this run different from the baseline: QWEN_* variables and switches that differ, in name order. */
export function runLabel(run: E2eRun, base: E2eRun): string {
  const env = run.env ?? {}, benv = base.env ?? {};
  const parts: string[] = [];
  for (const k of [...new Set([...Object.keys(env), ...Object.keys(benv)])].sort())
    if (env[k] !== benv[k]) parts.push(`${k}=${env[k] ?? '(unset)'}`);
  for (const k of Object.keys(run.switches ?? {}).sort()) {
    const v = run.switches[k];
    if (v !== base.switches?.[k] && !parts.some((p) => p.startsWith(`${k}=`))) parts.push(`${k}=${v ? 1 : 0} (switch)`);
  }
  return parts.length ? parts.join(' ') : 'baseline';
}

/** The markdown table: one row per run, one column per figure any run has; "value (x ratio)" against runs[0]. */
export function compareSweeps(runs: LabelledRun[]): string {
  if (runs.length === 0) return '(no sweep results)';
  const base = runs[0].run;
  const cols = columns(runs.map((r) => r.run));
  const head = `| run | ${cols.map((c) => c.title).join(' | ')} |`;
  const rule = `|${' --- |'.repeat(cols.length + 1)}`;
  const rows = runs.map(({ name, run }, i) => {
    const label = i === 0 ? `${name}: baseline` : `${name}: ${runLabel(run, base)}`;
    const cells = cols.map((c) => {
      const v = c.value(run), b = c.value(base);
      if (v === null) return '—';
      const cell = i === 0 || b === null ? v.toFixed(1) : `${v.toFixed(1)} (x${(v / b).toFixed(3)})`;
      // a ratio is only a verdict at the same contexts (1 % of KV bytes is the size of the differences judged here)
      const ctx = c.context?.(run) ?? null, bctx = c.context?.(base) ?? null;
      return ctx !== null && bctx !== null && Math.abs(ctx - bctx) > 0.01 * bctx ? `${cell} at ctx ${ctx.toFixed(0)}` : cell;
    });
    return `| ${label} | ${cells.join(' | ')} |`;
  });
  return [head, rule, ...rows].join('\n');
}
