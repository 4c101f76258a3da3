/** Which backends this build and machine can use, and why not (the data behind `qwen-node doctor`). */
import { addon } from './native/binding';
import type { CpuInfo, CudaInfo } from './native/types';

export interface BackendsReport {
  cpu: CpuInfo & { usable: true };
  cuda: CudaInfo & { usable: boolean };
  /** What device 'auto' picks on this machine. */
  auto: 'cpu' | 'cuda';
}

export function backends(): BackendsReport {
  const a = addon();
  const cuda = a.cudaInfo();
  return { cpu: { ...a.cpuInfo(), usable: true }, cuda: { ...cuda, usable: cuda.available }, auto: cuda.available ? 'cuda' : 'cpu' };
}
