/** Which backends this build and machine can use, and why not (the data behind `qwen-node doctor`). */
import * as os from 'os';
import * as path from 'path';
import { addon } from './native/binding';
import type { CpuInfo, CudaInfo } from './native/types';

export interface BackendsReport {
  cpu: CpuInfo & { usable: true; model: string };
  cuda: CudaInfo & { usable: boolean };
  /** What device 'auto' picks on this machine. */
  auto: 'cpu' | 'cuda';
}

export function backends(): BackendsReport {
  const a = addon();
  const cuda = a.cudaInfo();
  return {
    cpu: { ...a.cpuInfo(), usable: true, model: os.cpus()[0]?.model ?? 'unknown' },
    cuda: { ...cuda, usable: cuda.available },
    auto: cuda.available ? 'cuda' : 'cpu',
  };
}

/** Versions, platform, memory and the addon file in use: what a bug report needs, available even when loading fails. */
export function environment(): Record<string, unknown> {
  const root = path.join(__dirname, '..');
  let binary: string | null = null;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    binary = require('node-gyp-build').path(root) as string;
  } catch (e) {
    binary = null;
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pkg = require(path.join(root, 'package.json')) as { version: string };
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return {
    qwenNode: pkg.version,
    node: process.version,
    napi: process.versions.napi,
    platform: `${process.platform}-${process.arch}`,
    glibc: header?.glibcVersionRuntime ?? null,
    memory: { totalGiB: +(os.totalmem() / 2 ** 30).toFixed(1), freeGiB: +(os.freemem() / 2 ** 30).toFixed(1) },
    binary: binary ? path.relative(root, binary) : null,
  };
}
