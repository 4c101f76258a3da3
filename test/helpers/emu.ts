/**
 * Builds and runs one of the SIMT-emulation programs of cuda/test (device code executed on the CPU): compiles the
 * sources with the host compiler ($CXX or g++; C++20, -Icpp -Icuda, plus the CUDA headers' directory when given) into
 * a temporary directory, runs the program and returns its stdout; a non-zero exit throws with that output. `flags`
 * add to (and, as later ones, override) the -O2.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');

/** The CUDA headers' include directory (CUDA_HOME, CUDA_PATH, /usr/local/cuda), or null on a machine without them. */
export const cudaInclude: string | null =
  [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda']
    .filter((d): d is string => !!d)
    .map((d) => path.join(d, 'include'))
    .find((d) => fs.existsSync(path.join(d, 'cuda_runtime.h')) && fs.existsSync(path.join(d, 'cuda_bf16.h'))) ?? null;

export function runEmu(sources: string[], opts: { args?: string[]; cudaHeaders?: boolean; flags?: string[] } = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-emu-'));
  try {
    const exe = path.join(dir, 'emu');
    const inc = opts.cudaHeaders ? [`-I${cudaInclude}`] : [];
    execFileSync(process.env.CXX || 'g++', [
      '-std=c++20', '-O2', ...(opts.flags ?? []), '-pthread', '-Wno-unknown-pragmas', ...inc, '-Icpp', '-Icuda', ...sources, '-o', exe,
    ], { cwd: ROOT, stdio: 'pipe' });
    try {
      return execFileSync(exe, opts.args ?? [], { encoding: 'utf8' });
    } catch (e) {
      throw new Error(`${sources[0]} failed:\n${(e as { stdout?: string }).stdout ?? e}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
