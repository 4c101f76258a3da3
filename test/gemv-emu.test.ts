/**
 * The CUDA decode GEMV kernels (cuda/gemv.cuh: gemv_vec_kernel in its three folds Plain / Norm / Add, and
 * mlp_swiglu_gemv_kernel, Plain and Norm; the code the GPU runs) executed on the CPU by the SIMT emulation of
 * cuda/test/simt_cuda.h, against float64 references with derived bounds (cuda/test/gemv_emu.cc): T = 1..8 rows,
 * shapes that take the tail loop only, one and two-and-a-bit rounds of the main loop, idle warps; bf16, fp16 and
 * fp32 output. It needs the CUDA headers (cuda_runtime.h, cuda_bf16.h) for the host compiler, not a GPU; without
 * them (a CPU-only machine) it is skipped. On a GPU, op_check's test_linear / test_fused / test_folded check the same
 * kernels for real.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..');
const cudaInclude = [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda']
  .filter((d): d is string => !!d)
  .map((d) => path.join(d, 'include'))
  .find((d) => fs.existsSync(path.join(d, 'cuda_runtime.h')) && fs.existsSync(path.join(d, 'cuda_bf16.h')));
const maybe = cudaInclude ? test : test.skip;
if (!cudaInclude) console.log('gemv-emu: no CUDA headers (CUDA_HOME, CUDA_PATH, /usr/local/cuda): skipped');

maybe('decode GEMV kernels under the SIMT emulation == float64 within their bounds, every fold and row count', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-gemv-emu-'));
  try {
    const exe = path.join(dir, 'gemv_emu');
    execFileSync(process.env.CXX || 'g++', [
      '-std=c++20', '-O2', '-pthread', '-Wno-unknown-pragmas', `-I${cudaInclude}`, '-Icpp', '-Icuda',
      'cuda/test/gemv_emu.cc', '-o', exe,
    ], { cwd: ROOT, stdio: 'pipe' });
    let out: string;
    try {
      out = execFileSync(exe, { encoding: 'utf8' });
    } catch (e) {
      throw new Error(`gemv_emu failed:\n${(e as { stdout?: string }).stdout ?? e}`);
    }
    const m = /(\d+) cases, (\d+) differ/.exec(out);
    expect(m).not.toBeNull();
    // 8 row counts x 3 K x (3 GEMV folds + 2 MLP) + 2 x 3 cases of the other types
    expect(Number(m![1])).toBe(126);
    expect(Number(m![2])).toBe(0);
    for (const fold of ['gemv plain', 'gemv norm', 'gemv add', 'mlp plain', 'mlp norm', 'fp16', '->f32']) expect(out).toContain(fold);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 240000);
