/**
 * Prometheus metrics of one server (prom-client, a Registry of its own: several servers in one process never share
 * or collide). Gauges of the model's scheduler are read from model.stats() at scrape time.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Model } from '../model/model';

export const METRIC_PREFIX = 'qwen_';

export interface ServerMetrics {
  registry: Registry;
  requests: Counter<'route' | 'status'>;
  errors: Counter<'route' | 'code'>;
  ttft: Histogram;
  tpot: Histogram;
  promptTokens: Counter;
  generatedTokens: Counter;
}

export function createMetrics(model: Model, processMetrics: boolean): ServerMetrics {
  const registry = new Registry();
  const p = METRIC_PREFIX;
  const stat = <K extends 'running' | 'waiting' | 'kvBlocksUsed' | 'kvBlocksFree'>(key: K) => {
    try {
      const s = model.stats();
      return key === 'kvBlocksFree' ? s.kvBlocksTotal - s.kvBlocksUsed : s[key as Exclude<K, 'kvBlocksFree'>];
    } catch {
      return 0; // disposed: nothing runs any more
    }
  };
  const gauge = (name: string, help: string, key: Parameters<typeof stat>[0]) =>
    new Gauge({
      name: p + name,
      help,
      registers: [registry],
      collect() {
        this.set(stat(key));
      },
    });
  gauge('running_sequences', 'Sequences admitted to the batch (holding KV-cache blocks).', 'running');
  gauge('waiting_sequences', 'Sequences waiting for admission (new, or preempted).', 'waiting');
  gauge('kv_blocks_used', 'KV-cache blocks in use.', 'kvBlocksUsed');
  gauge('kv_blocks_free', 'KV-cache blocks free.', 'kvBlocksFree');
  if (processMetrics) collectDefaultMetrics({ register: registry, prefix: p });
  return {
    registry,
    requests: new Counter({
      name: p + 'requests_total',
      help: 'HTTP requests answered, by route and status code (499: the client went away before a response).',
      labelNames: ['route', 'status'] as const,
      registers: [registry],
    }),
    errors: new Counter({
      name: p + 'errors_total',
      help: 'Errors answered (also inside a started stream), by route and error code.',
      labelNames: ['route', 'code'] as const,
      registers: [registry],
    }),
    ttft: new Histogram({
      name: p + 'time_to_first_token_seconds',
      help: 'From the request to its first generated text (queueing and prefill included).',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    tpot: new Histogram({
      name: p + 'time_per_output_token_seconds',
      help: 'Per request: (last token time - first token time) / (completion tokens - 1).',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5],
      registers: [registry],
    }),
    promptTokens: new Counter({ name: p + 'prompt_tokens_total', help: 'Prompt tokens of the generations run.', registers: [registry] }),
    generatedTokens: new Counter({
      name: p + 'generated_tokens_total',
      help: 'Tokens generated (completion tokens, eos / stop words included); rate() gives tokens/s.',
      registers: [registry],
    }),
  };
}
