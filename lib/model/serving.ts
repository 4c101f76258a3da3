/**
 * Load options of continuous batching and the paged KV cache: ONE table of their defaults and ranges, and the KV
 * cache size derived from the machine when not given.
 */
import * as os from 'node:os';
import { addon } from '../native/binding';
import { QwenError, badArg } from '../errors';
import type { QwenConfig } from './config';
import { MAX_POSITIONS } from './limits';

/** Positions per KV block (cpp/core/kv_cache.h kKvBlockTokens). */
export const KV_BLOCK_TOKENS = 32;

export interface ServingOptions {
  /**
   * Positions the KV cache holds over all sequences (rounded up to blocks of 32). Memory is taken as blocks are
   * first used, so this is a cap. Default: a quarter of RAM on the CPU; on CUDA, the free GPU memory left after the
   * weights and 1.5 GiB of workspace, times 0.9.
   */
  kvCacheTokens?: number;
  /** Tokens per batched step (prompt chunks + one per decoding sequence). Default: 256 on the CPU, 2048 on CUDA. */
  maxBatchTokens?: number;
  /** Sequences per batched step. Default: 64 on the CPU, 256 on CUDA. */
  maxBatchSequences?: number;
  /** Sequences waiting for admission before a new one is refused with E_QUEUE_FULL. Default 256. */
  maxQueue?: number;
  /**
   * Start the next batched step before the last one's picks have run their generation loops (scheduler.ts
   * "Overlapped steps"): the host's work between steps overlaps the next step. Default true; false: lockstep, where
   * a generation that stops wastes no step.
   */
  overlapSteps?: boolean;
}

type Key = Exclude<keyof ServingOptions, 'overlapSteps'>;
const TABLE: Record<Key, { min: number; max: number; cpu?: number; cuda?: number }> = {
  kvCacheTokens: { min: KV_BLOCK_TOKENS, max: 2 ** 26 },
  maxBatchTokens: { min: 1, max: 65536, cpu: 256, cuda: 2048 },
  maxBatchSequences: { min: 1, max: 4096, cpu: 64, cuda: 256 },
  maxQueue: { min: 0, max: 1e6, cpu: 256, cuda: 256 },
};

/** Bytes of K and V per position: every layer, fp32 on the CPU, the activation type on CUDA. */
export function kvBytesPerToken(c: QwenConfig, device: 'cpu' | 'cuda', dtype: string): number {
  const elem = device === 'cpu' || dtype === 'fp32' ? 4 : 2;
  return c.num_hidden_layers * 2 * c.hidden_size * elem;
}

export function resolveServing(
  o: ServingOptions,
  c: QwenConfig,
  device: 'cpu' | 'cuda',
  dtype: string,
  weightBytes: number,
): Required<ServingOptions> {
  for (const k of Object.keys(TABLE) as Key[]) {
    const v = o[k];
    const { min, max } = TABLE[k];
    if (v !== undefined && !(Number.isInteger(v) && v >= min && v <= max)) throw badArg(`options.${k}`, `an integer in [${min}, ${max}]`, v);
  }
  if (o.overlapSteps !== undefined && typeof o.overlapSteps !== 'boolean') throw badArg('options.overlapSteps', 'a boolean', o.overlapSteps);
  const perToken = kvBytesPerToken(c, device, dtype);
  let kv = o.kvCacheTokens;
  if (kv === undefined) {
    if (device === 'cpu') kv = Math.floor((0.25 * os.totalmem()) / perToken);
    else {
      const free = addon().cudaInfo().freeMemory;
      const weights = dtype === 'fp32' ? weightBytes * 2 : weightBytes; // stored bf16 -> uploaded in the compute type
      kv = Math.floor((0.9 * (free - weights - 1.5 * 2 ** 30)) / perToken);
      if (kv < KV_BLOCK_TOKENS) {
        throw new QwenError('E_BACKEND', `the GPU has ${(free / 2 ** 30).toFixed(1)} GiB free: too little for the weights and a KV cache`);
      }
    }
    // Beyond what 256 sequences of the maximum length could use there is no point; at least one block.
    kv = Math.max(KV_BLOCK_TOKENS, Math.min(kv, 256 * MAX_POSITIONS, TABLE.kvCacheTokens.max));
  }
  const pick = (k: Exclude<Key, 'kvCacheTokens'>) => o[k] ?? (TABLE[k][device] as number);
  return {
    kvCacheTokens: Math.ceil(kv / KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS,
    maxBatchTokens: pick('maxBatchTokens'),
    maxBatchSequences: pick('maxBatchSequences'),
    maxQueue: pick('maxQueue'),
    overlapSteps: o.overlapSteps ?? true,
  };
}
