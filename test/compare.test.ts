/**
 * lib/bench/compare.ts: the GPU check's one table of the sweeps run with different switches. Runs are built here with
 * known figures, so every cell's value and ratio is known from the inputs.
 */
import { compareSweeps, runLabel } from '../lib/bench/compare';
import type { E2eRun } from '../lib/bench/sweep';

function run(o: { env?: Record<string, string>; switches?: Record<string, boolean>; ctx?: Array<[number, number]>; batch?: Array<[number, number, number?]> }): E2eRun {
  return {
    env: o.env ?? {},
    switches: o.switches ?? { QWEN_FOLD_NORM: false },
    points: (o.ctx ?? []).map(([context, tokPerS]) => ({ context, decode: { tokPerS } })),
    batch: o.batch ? { context: 200, points: o.batch.map(([batchSize, tokPerS, context]) => ({ batchSize, tokPerS, context: context ?? 217 })) } : null,
  } as unknown as E2eRun;
}

const cells = (line: string) => line.split('|').slice(1, -1).map((c) => c.trim());

test('one row per run, one column per figure any run has, ratios against the first run', () => {
  const base = run({ ctx: [[32, 150], [2048, 140]], batch: [[1, 149], [64, 5600]] });
  const pdl = run({ env: { QWEN_CUDA_PDL: '1' }, ctx: [[32, 165]], batch: [[16, 900], [64, 5040]] });
  const fold = run({ switches: { QWEN_FOLD_NORM: true }, ctx: [[32, 120], [2048, 154]] });
  const lines = compareSweeps([{ name: 'sweep', run: base }, { name: 'ab-pdl', run: pdl }, { name: 'ab-fold', run: fold }]).split('\n');
  expect(lines).toHaveLength(5);
  expect(cells(lines[0])).toEqual(['run', 'bs 1, prompt 32: tok/s', 'bs 1, prompt 2048: tok/s', 'bs 1 at ~200: tok/s',
    'bs 16 at ~200: tok/s', 'bs 64 at ~200: tok/s']);
  expect(cells(lines[2])).toEqual(['sweep: baseline', '150.0', '140.0', '149.0', '—', '5600.0']);
  // 165 / 150 = 1.1; bs 16 has no baseline figure: value only; 5040 / 5600 = 0.9
  expect(cells(lines[3])).toEqual(['ab-pdl: QWEN_CUDA_PDL=1', '165.0 (x1.100)', '—', '—', '900.0', '5040.0 (x0.900)']);
  // 120 / 150 = 0.8, 154 / 140 = 1.1
  expect(cells(lines[4])).toEqual(['ab-fold: QWEN_FOLD_NORM=1 (switch)', '120.0 (x0.800)', '154.0 (x1.100)', '—', '—', '—']);
});

test('a label names every QWEN_* variable that differs (set, changed or unset) and switches not already named', () => {
  const base = run({ env: { QWEN_CUBLAS_MIN_T: '64', QWEN_X: 'a' } });
  expect(runLabel(base, base)).toBe('baseline');
  const other = run({ env: { QWEN_CUBLAS_MIN_T: '9', QWEN_GEMM_SKINNY: '1' }, switches: { QWEN_FOLD_NORM: true } });
  expect(runLabel(other, base)).toBe('QWEN_CUBLAS_MIN_T=9 QWEN_GEMM_SKINNY=1 QWEN_X=(unset) QWEN_FOLD_NORM=1 (switch)');
  // a switch set through the environment is named once, as the variable
  const viaEnv = run({ env: { QWEN_CUBLAS_MIN_T: '64', QWEN_X: 'a', QWEN_FOLD_NORM: '1' }, switches: { QWEN_FOLD_NORM: true } });
  expect(runLabel(viaEnv, base)).toBe('QWEN_FOLD_NORM=1');
});

test('a batch figure measured at another mean context says so (its ratio is no verdict then)', () => {
  const base = run({ batch: [[16, 800, 217]] });
  const same = run({ env: { A: '1' }, batch: [[16, 880, 218]] }); // within 1 %: no note
  const other = run({ env: { B: '1' }, batch: [[16, 880, 243]] });
  const lines = compareSweeps([{ name: 'b', run: base }, { name: 's', run: same }, { name: 'o', run: other }]).split('\n');
  expect(cells(lines[3])[1]).toBe('880.0 (x1.100)');
  expect(cells(lines[4])[1]).toBe('880.0 (x1.100) at ctx 243');
});

test('the largest batch chained (overlapped steps) gets a column of its own when a run has it', () => {
  const base = run({ batch: [[16, 800], [64, 5600]] });
  const withChained = (r: E2eRun, tokPerS: number) => {
    r.batch!.points[1].chained = { steps: 32, msPerStep: 64e3 / tokPerS, tokPerS, overlapped: 1, gapMs: 0.5 };
    return r;
  };
  const lines = compareSweeps([
    { name: 'a', run: withChained(base, 6400) },
    { name: 'b', run: withChained(run({ env: { B: '1' }, batch: [[16, 800], [64, 5600]] }), 7040) },
    { name: 'c', run: run({ env: { C: '1' }, batch: [[64, 5000]] }) },
  ]).split('\n');
  expect(cells(lines[0])).toEqual(['run', 'bs 16 at ~200: tok/s', 'bs 64 at ~200: tok/s', 'bs 64 chained: tok/s']);
  expect(cells(lines[2])[3]).toBe('6400.0');
  expect(cells(lines[3])[3]).toBe('7040.0 (x1.100)');
  expect(cells(lines[4])[3]).toBe('—');
});

test('no runs: a line that says so', () => {
  expect(compareSweeps([])).toBe('(no sweep results)');
});
