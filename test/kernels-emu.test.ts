/**
 * CUDA kernels written against the CUDA headers, executed on the CPU by the SIMT emulation of cuda/test/simt_cuda.h
 * (the host compiler gets cuda_bf16.h's conversions; blocks run one after another). No GPU needed, but the CUDA
 * headers are: without them (a CPU-only machine) these are skipped. On a GPU, op_check checks the same kernels for real.
 *   - cuda/test/gemv_emu.cc: the decode GEMVs of cuda/gemv.cuh (gemv_vec_kernel in its folds Plain / Norm / Add,
 *     mlp_swiglu_gemv_kernel Plain / Norm) against float64 with derived bounds: T = 1..8 rows, shapes that take the
 *     tail loop only, one and two-and-a-bit rounds of the main loop, idle warps; bf16, fp16 and fp32 output.
 *   - cuda/test/pick_emu.cc: the device pick of every greedy GPU step (pick_kernel.cuh, with pick_host.cc's upload and
 *     results) against the CPU pick (which equals the TS sampler, test/pick.test.ts): ids, top lists and the penalized
 *     rows exactly, logprobs within the double-sum bound; ties, NaN, +-Infinity, penalties, a vocab limit.
 */
import { cudaInclude, runEmu } from './helpers/emu';

const maybe = cudaInclude ? test : test.skip;
if (!cudaInclude) console.log('kernels-emu: no CUDA headers (CUDA_HOME, CUDA_PATH, /usr/local/cuda): skipped');

maybe('decode GEMV kernels == float64 within their bounds, every fold and row count', () => {
  const out = runEmu(['cuda/test/gemv_emu.cc'], { cudaHeaders: true });
  const m = /(\d+) cases, (\d+) differ/.exec(out);
  expect(m).not.toBeNull();
  // 8 row counts x 3 K x (3 GEMV folds + 2 MLP) + 2 x 3 cases of the other types
  expect(Number(m![1])).toBe(126);
  expect(Number(m![2])).toBe(0);
  for (const fold of ['gemv plain', 'gemv norm', 'gemv add', 'mlp plain', 'mlp norm', 'fp16', '->f32']) expect(out).toContain(fold);
}, 240000);

maybe('device pick == the CPU pick: ids, top lists and penalized rows exactly, logprobs within the sum bound', () => {
  const out = runEmu([
    'cuda/test/pick_emu.cc', 'cuda/pick_host.cc', 'cpp/cpu/pick.cc', 'cpp/cpu/sample.cc', 'cpp/cpu/thread_pool.cc',
    'cpp/core/pick_tables.cc',
  ], { cudaHeaders: true });
  expect(/(\d+) rows, (\d+) differ/.exec(out)?.slice(1).map(Number)).toEqual([14, 0]);
  for (const kind of ['2 x +Infinity', 'all NaN', 'ties at the max', 'repetition + presence / frequency', 'top_n=20']) expect(out).toContain(kind);
}, 240000);
