/**
 * The decode sweep of the benchmark (lib/bench/sweep.ts) on a tiny CPU checkpoint: it times what it says — batch-1
 * decode at each context, then B sequences sharing each native step — and its `sample` option makes every decode step
 * a sampled draw inside the backend (doSample, a fresh u per step), the request the device check times with and
 * without QWEN_SAMPLE_FX.
 */
import { runSweep } from '../lib/bench/sweep';
import { Sequence } from '../lib/model/model';
import type { NativePickRequest } from '../lib/native/types';
import { removeDir, tinyCheckpoint } from './helpers/fixtures';

let dir: string;
beforeAll(async () => {
  dir = await tinyCheckpoint('bf16');
}, 120000);
afterAll(() => removeDir(dir));

const base = {
  device: 'cpu' as const, dtype: 'fp32' as const, mode: 'cpu-test', threads: 2, contexts: [5, 40], decodeSteps: 4,
  batchSizes: [1, 3], batchContext: 12, batchSteps: 3, peakGflops: null, log: () => {},
};

test.each([
  ['greedy pick', { pick: true }],
  ['sampled pick', { pick: true, sample: { temperature: 0.7, topK: 0, topP: 0.8 } }],
])('%s: every decode step is one forwardPick of the requested kind; batched steps hold B sequences', async (_what, extra) => {
  const spy = jest.spyOn(Sequence.prototype, 'forwardPick');
  const next = jest.spyOn(Sequence.prototype, 'forwardPickNext');
  process.env.QWEN_SWEEP_TEST = '1';
  try {
    const r = await runSweep({ dir, ...base, ...extra });
    delete process.env.QWEN_SWEEP_TEST;
    expect(r.points.map((p) => [p.context, p.decode.steps])).toEqual([[5, 4], [40, 4]]);
    // the run names the QWEN_* environment it ran with (lib/bench/compare.ts labels runs by it)
    expect(r.env).toEqual({ ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('QWEN_'))), QWEN_SWEEP_TEST: '1' });
    for (const p of r.points) expect(p.decode.tokPerS).toBeGreaterThan(0);
    expect(r.batch!.points.map((p) => [p.batchSize, p.steps, p.meanSequencesPerStep])).toEqual([[1, 3, 1], [3, 3, 3]]);
    // (decodeSteps + 1 untimed) per context, (batchSteps + 1) x B per batch size; then as many chained steps per
    // batch size: one forwardPick and batchSteps forwardPickNext per sequence, each step launched ahead of the last
    // one's answers
    expect(spy).toHaveBeenCalledTimes(2 * 5 + 4 * 1 + 4 * 3 + (1 + 3));
    expect(next).toHaveBeenCalledTimes(3 * 1 + 3 * 3);
    expect(r.batch!.points.map((p) => [p.chained?.steps, p.chained?.overlapped])).toEqual([[3, 1], [3, 1]]);
    for (const p of r.batch!.points) expect(p.chained!.tokPerS).toBeGreaterThan(0);
    const reqs = [...spy.mock.calls.map((c) => c[1] as NativePickRequest), ...next.mock.calls.map((c) => c[0] as NativePickRequest)];
    if ('sample' in extra) {
      for (const q of reqs) expect([q.doSample, q.temperature, q.topK, q.topP]).toEqual([true, 0.7, 0, 0.8]);
      const us = reqs.map((q) => q.u!);
      for (const u of us) expect(u >= 0 && u < 1).toBe(true);
      expect(new Set(us).size).toBe(us.length); // a fresh draw every step
    } else {
      for (const q of reqs) expect(q.doSample).toBeUndefined();
    }
  } finally {
    delete process.env.QWEN_SWEEP_TEST;
    spy.mockRestore();
    next.mockRestore();
  }
}, 120000);
