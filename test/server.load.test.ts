/**
 * Load on loopback: 64 concurrent streaming clients (chat and completions mixed, 20% of them disconnect mid-stream)
 * against one server over a tiny random checkpoint; and greedy outputs of concurrent requests vs the same requests
 * one at a time. Timings (event-loop delay, throughput) are printed, never asserted.
 */
import type { AddressInfo } from 'net';
import { monitorEventLoopDelay } from 'perf_hooks';
import * as v8 from 'v8';
import * as vm from 'vm';
import type { FastifyInstance } from 'fastify';
import { loadModel, Model } from '../lib/model/model';
import { createServer } from '../lib/server';
import { removeDir, tinyCheckpoint } from './helpers/fixtures';
import { postJson, postSse, waitFor } from './server-helpers';

let dir: string;
let model: Model;
let app: FastifyInstance;
let base: string;

beforeAll(async () => {
  dir = await tinyCheckpoint('bf16');
  model = await loadModel(dir, { device: 'cpu' });
  app = createServer(model, { modelName: 'tiny', processMetrics: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
  if (dir) removeDir(dir);
});

/** A full GC before each RSS reading, so garbage awaiting collection (logits rows) does not count as growth. */
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const rss = () => {
  gc();
  return process.memoryUsage().rss;
};

const idle = () => {
  const s = model.stats();
  return s.running === 0 && s.waiting === 0 && s.kvBlocksUsed === 0;
};

const PROMPTS = ['Once upon a time', 'The capital of France is', 'def fib(n):', '你好，世界', 'List three colors:', 'Q: 2+2?\nA:'];

interface Outcome {
  i: number;
  disconnect: boolean;
  status: number;
  done: boolean;
  finish?: string;
  errors: unknown[];
  events: number;
}

/** One client: i picks chat or completions, the prompt, max_tokens (16..32), and whether it leaves mid-stream. */
async function client(i: number, round: number): Promise<Outcome> {
  const chat = i % 2 === 0;
  const disconnect = i % 5 === 2; // 13 of 64: ~20%
  const leaveAfter = 1 + (i % 3); // events read before leaving
  const prompt = PROMPTS[i % PROMPTS.length];
  const common = { max_tokens: 16 + (i % 17), stream: true, seed: 1000 * round + i, temperature: i % 3 === 0 ? 0 : 0.9, top_p: 0.95 };
  const body = chat ? { ...common, messages: [{ role: 'user', content: prompt }] } : { ...common, prompt };
  const r = await postSse(`${base}/v1/${chat ? 'chat/completions' : 'completions'}`, body, (_e, k) => disconnect && k + 1 >= leaveAfter);
  const events = r.events.filter((e) => e !== '[DONE]') as Array<{ error?: unknown; choices?: Array<{ finish_reason: string | null }> }>;
  return {
    i,
    disconnect,
    status: r.status,
    done: r.done,
    finish: events.flatMap((e) => e.choices ?? []).find((c) => c.finish_reason)?.finish_reason ?? undefined,
    errors: events.filter((e) => e.error).map((e) => e.error),
    events: r.events.length,
  };
}

async function round(n: number, r: number): Promise<{ outcomes: Outcome[]; seconds: number }> {
  const t0 = process.hrtime.bigint();
  const outcomes = await Promise.all(Array.from({ length: n }, (_, i) => client(i, r)));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await waitFor(idle, 30000, 'the model to be idle after the round');
  return { outcomes, seconds };
}

function check(outcomes: Outcome[]): void {
  for (const o of outcomes) {
    expect({ i: o.i, status: o.status, errors: o.errors }).toEqual({ i: o.i, status: 200, errors: [] });
    if (!o.disconnect || o.done) {
      // Ran to the end (a disconnecting client may finish before it leaves when the reply is very short).
      expect({ i: o.i, done: o.done, finish: ['stop', 'length'].includes(o.finish ?? '') }).toEqual({ i: o.i, done: true, finish: true });
    }
  }
  expect(outcomes.filter((o) => o.disconnect && !o.done).length).toBeGreaterThan(0);
}

test('64 concurrent streaming clients, 20% disconnecting: all complete or abort cleanly; nothing leaks', async () => {
  const N = 64;
  const warm = await round(N, 0); // warm-up: V8 heap, allocator pools, tokenizer caches reach their working size
  check(warm.outcomes);
  const rss0 = rss();
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  const measured = await round(N, 1);
  h.disable();
  check(measured.outcomes);
  const rss1 = rss();
  const s = model.stats();
  expect([s.running, s.waiting, s.kvBlocksUsed]).toEqual([0, 0, 0]);
  expect(model.activeSequences).toBe(0);
  // The server answered no request with a 5xx and counted no error.
  const metrics = await (await fetch(`${base}/metrics`)).text();
  expect(metrics).not.toMatch(/^qwen_requests_total\{[^}]*status="5\d\d"\} [1-9]/m);
  expect(metrics).not.toMatch(/^qwen_errors_total\{[^}]*\} [1-9]/m);
  // RSS after a second identical round, once the first one warmed everything up, both read after a full GC. What
  // may legitimately differ: V8 heap pages and malloc arenas kept from the busier moments of the round (one step of
  // 64 sequences alone returns 64 x 151,936 fp32 logits = 39 MB), i.e. tens of MB. 256 MiB leaves room for that and
  // still catches the leak that matters most: keeping one logits row per generated token would add
  // 64 x ~24 x 0.6 MB ~ 0.9 GB per round. (Leaked sequences and KV blocks are checked exactly above; a leak of small
  // per-request objects, a few kB each, is below what one round can show.)
  const growth = rss1 - rss0;
  expect(growth).toBeLessThan(256 * 2 ** 20);
  const finished = measured.outcomes.filter((o) => o.done).length;
  console.log(
    `load: ${N} streaming clients (${measured.outcomes.filter((o) => o.disconnect && !o.done).length} left mid-stream), ` +
      `round 1 ${warm.seconds.toFixed(2)} s, round 2 ${measured.seconds.toFixed(2)} s, ${finished} ran to [DONE]; ` +
      `event-loop delay p50 ${(h.percentile(50) / 1e6).toFixed(1)} ms, p99 ${(h.percentile(99) / 1e6).toFixed(1)} ms, ` +
      `max ${(h.max / 1e6).toFixed(1)} ms; RSS ${(rss0 / 2 ** 20).toFixed(0)} -> ${(rss1 / 2 ** 20).toFixed(0)} MiB; ` +
      `model steps ${s.steps}, preemptions ${s.preemptions}`,
  );
}, 180000);

test('greedy outputs of concurrent requests equal the same requests run one at a time', async () => {
  const requests = PROMPTS.flatMap((p, k) => [
    { route: 'completions', body: { prompt: p, max_tokens: 12 + k, temperature: 0 } },
    { route: 'chat/completions', body: { messages: [{ role: 'user', content: p }], max_tokens: 12 + k, temperature: 0 } },
  ]);
  const text = (route: string, json: any) => (route === 'completions' ? json.choices[0].text : json.choices[0].message.content);
  const alone: string[] = [];
  for (const r of requests) {
    const res = await postJson(`${base}/v1/${r.route}`, r.body);
    expect(res.status).toBe(200);
    alone.push(text(r.route, res.json));
  }
  const together = await Promise.all(
    requests.map(async (r) => {
      const res = await postJson(`${base}/v1/${r.route}`, r.body);
      expect(res.status).toBe(200);
      return text(r.route, res.json);
    }),
  );
  expect(together).toEqual(alone);
  await waitFor(idle, 30000, 'idle');
});
