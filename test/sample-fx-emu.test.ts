/**
 * The CUDA device draw's block primitives (cuda/sample_fx_ops.cuh: the radix selects, chunked scans, histogram and
 * gather the GPU runs for QWEN_SAMPLE_FX=1) executed on the CPU by a SIMT emulation (cuda/test/simt_emu.h: one thread
 * per CUDA thread of a block, barriers for __syncthreads and the warp shuffles), against the host reference
 * cpp/cpu/sample_fx.cc: every FxOut equal bit for bit over rows and configs that take all five routes
 * (cuda/test/sample_fx_emu.cc); and the greedy pick's top-n list (pick.cu, the same primitives) against a sort. This checks that device code's logic on every CI run; its behaviour on a real GPU
 * (memory model, lockstep) is op_check's test_sample_fx and the CUDA block of test/sample-fx.test.ts.
 */
import { runEmu } from './helpers/emu';

test('device primitives under the SIMT emulation == the host reference, all routes', () => {
  const out = runEmu(['cuda/test/sample_fx_emu.cc', 'cpp/cpu/sample_fx.cc', 'cpp/core/pick_tables.cc'], { args: ['4096'] });
  const m = /(\d+) rows, (\d+) differ, routes (\d+)\/(\d+)\/(\d+)\/(\d+)\/(\d+)/.exec(out);
  expect(m).not.toBeNull();
  expect(Number(m![1])).toBe(54);
  expect(Number(m![2])).toBe(0);
  for (let r = 3; r <= 7; r++) expect(Number(m![r])).toBeGreaterThan(0);
  // pick.cu's greedy top-n list (DevFxOps::top_logits) against a sort of the ids of non-zero weight
  expect(/(\d+) top lists, (\d+) differ/.exec(out)?.slice(1).map(Number)).toEqual([27, 0]);
}, 240000);
