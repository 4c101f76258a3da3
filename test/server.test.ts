/**
 * The OpenAI-compatible server (lib/server) on a tiny random checkpoint, through the official `openai` client and raw
 * HTTP: responses, streams, logprobs, errors and status codes, metrics, disconnects, and the CLI's SIGTERM drain.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import type { AddressInfo } from 'net';
import * as path from 'path';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { loadModel, Model } from '../lib/model/model';
import { makeContext } from '../lib/chat/chatml';
import { createServer } from '../lib/server';
import { removeDir, tinyCheckpoint } from './helpers/fixtures';
import { postJson, postSse, waitFor } from './server-helpers';

let dir: string;
let model: Model;
let app: FastifyInstance;
let base: string; // http://127.0.0.1:PORT
let client: OpenAI;

async function listen(a: FastifyInstance): Promise<string> {
  await a.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(a.server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  dir = await tinyCheckpoint('bf16');
  model = await loadModel(dir, { device: 'cpu' });
  app = createServer(model, { modelName: 'tiny', processMetrics: false });
  base = await listen(app);
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
  if (dir) removeDir(dir);
});

const idle = () => {
  const s = model.stats();
  return s.running === 0 && s.waiting === 0 && s.kvBlocksUsed === 0;
};

describe('completions', () => {
  test('non-stream: text, finish_reason length at max_tokens, usage; equals the library run', async () => {
    const r = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
    const lib = await model.generate('Once upon a time', { maxNewTokens: 8, temperature: 0 }).result();
    expect(r.object).toBe('text_completion');
    expect(r.model).toBe('tiny');
    expect(r.id).toMatch(/^cmpl-/);
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0].text).toBe(lib.text);
    expect(r.choices[0].index).toBe(0);
    expect(r.choices[0].logprobs).toBeNull();
    const promptTokens = model.tokenizer.encode('Once upon a time').length;
    expect(r.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: lib.usage.completionTokens, total_tokens: promptTokens + lib.usage.completionTokens });
    expect(r.choices[0].finish_reason).toBe(lib.finishReason);
    if (lib.finishReason === 'length') expect(r.usage!.completion_tokens).toBe(8);
  });

  test('the default max_tokens is 16 (OpenAI), and finish_reason is length when it is hit', async () => {
    const r = await client.completions.create({ model: 'tiny', prompt: 'Hello there', temperature: 0, stop: null });
    expect(r.usage!.completion_tokens).toBeLessThanOrEqual(16);
    if (r.usage!.completion_tokens === 16) expect(r.choices[0].finish_reason).toBe('length');
  });

  test('a prompt of token ids gives the same result as its text', async () => {
    const ids = model.tokenizer.encode('Once upon a time');
    const a = await client.completions.create({ model: 'tiny', prompt: ids, max_tokens: 6, temperature: 0 });
    const b = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 6, temperature: 0 });
    expect(a.choices[0].text).toBe(b.choices[0].text);
  });

  test('greedy stream: chunks concatenate to the non-stream text; one finish chunk; usage chunk; [DONE]', async () => {
    const params = { model: 'tiny', prompt: 'The capital of France is', max_tokens: 12, temperature: 0, seed: 7 };
    const whole = await client.completions.create(params);
    const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const finishes: string[] = [];
    let usage;
    let chunks = 0;
    for await (const c of stream) {
      chunks++;
      expect(c.object).toBe('text_completion');
      if (c.choices.length) {
        text += c.choices[0].text;
        if (c.choices[0].finish_reason) finishes.push(c.choices[0].finish_reason);
      }
      if (c.usage) usage = c.usage;
    }
    expect(chunks).toBeGreaterThan(2);
    expect(text).toBe(whole.choices[0].text);
    expect(finishes).toEqual([whole.choices[0].finish_reason]);
    expect(usage).toEqual(whole.usage);
    // the wire format: data: {json}\n\n ... data: [DONE]\n\n
    const raw = await postSse(`${base}/v1/completions`, { ...params, stream: true });
    expect(raw.status).toBe(200);
    expect(raw.contentType).toMatch(/^text\/event-stream/);
    expect(raw.done).toBe(true);
    expect(raw.events[raw.events.length - 1]).toBe('[DONE]');
    expect((raw.events as any[]).slice(0, -1).map((e) => e.choices[0].text).join('')).toBe(whole.choices[0].text);
  });

  test('seeded sampling is reproducible through the server', async () => {
    const params = { model: 'tiny', prompt: 'Hello', max_tokens: 10, temperature: 1.1, top_p: 0.95, seed: 1234 };
    const a = await client.completions.create(params);
    const b = await client.completions.create(params);
    const lib = await model.generate('Hello', { maxNewTokens: 10, temperature: 1.1, topP: 0.95, seed: 1234 }).result();
    expect(a.choices[0].text).toBe(b.choices[0].text);
    expect(a.choices[0].text).toBe(lib.text);
  });

  test('penalties and extensions reach the sampler (same text and logprobs as the library with the same options)', async () => {
    // A random model's greedy picks rarely change under penalties (its top logit is far ahead), but the penalized
    // distribution, which greedy logprobs report, does: earlier tokens gain e^(2 * count + 1) in weight.
    const base = { model: 'tiny', prompt: 'Hello', max_tokens: 12, temperature: 0, logprobs: 1, repetition_penalty: 1.3, top_k: 5 };
    const plain = await client.completions.create(base as never as OpenAI.CompletionCreateParamsNonStreaming);
    const pen = await client.completions.create({ ...base, frequency_penalty: -2, presence_penalty: -1 } as never as OpenAI.CompletionCreateParamsNonStreaming);
    const lib = await model
      .generate('Hello', { maxNewTokens: 12, temperature: 0, logprobs: 1, repetitionPenalty: 1.3, topK: 5, frequencyPenalty: -2, presencePenalty: -1 })
      .result();
    expect(pen.choices[0].text).toBe(lib.text);
    expect(pen.choices[0].logprobs!.token_logprobs).toEqual(lib.logprobs!.map((l) => l.logprob));
    const a = plain.choices[0].logprobs!.token_logprobs!;
    const b = pen.choices[0].logprobs!.token_logprobs!;
    expect(Math.abs(a[0] - b[0])).toBeLessThan(1e-9); // nothing generated yet: nothing to penalize
    expect(Math.max(...a.map((x, i) => (plain.choices[0].text === pen.choices[0].text ? Math.abs(x - b[i]) : 1)))).toBeGreaterThan(1e-4);
  });

  test('stop strings cut the text (finish_reason stop)', async () => {
    const full = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 16, temperature: 0 });
    const cut = full.choices[0].text.slice(3, 6);
    const r = await client.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 16, temperature: 0, stop: [cut, 'zzzz'] });
    expect(r.choices[0].finish_reason).toBe('stop');
    expect(r.choices[0].text).toBe(full.choices[0].text.slice(0, full.choices[0].text.indexOf(cut)));
  });

  test('logprobs: OpenAI completions shape; greedy picks the best; stream carries the same values', async () => {
    const params = { model: 'tiny', prompt: 'Hello', max_tokens: 8, temperature: 0, logprobs: 3 };
    const r = await client.completions.create(params);
    const lp = r.choices[0].logprobs!;
    const n = lp.tokens!.length;
    expect(n).toBeGreaterThan(0);
    expect(lp.token_logprobs).toHaveLength(n);
    expect(lp.top_logprobs).toHaveLength(n);
    expect(lp.text_offset).toHaveLength(n);
    expect(lp.text_offset![0]).toBe(0);
    for (let i = 0; i < n; i++) {
      const top = lp.top_logprobs![i];
      const values = Object.values(top);
      expect(values.length).toBeGreaterThanOrEqual(1);
      expect(values.length).toBeLessThanOrEqual(4); // 3 alternatives + the chosen one
      expect(lp.token_logprobs![i]).toBeLessThanOrEqual(0);
      expect(top[lp.tokens![i]]).toBeCloseTo(lp.token_logprobs![i], 6);
      expect(lp.token_logprobs![i]).toBeGreaterThanOrEqual(Math.max(...values) - 1e-6); // greedy: the argmax
      if (i > 0) expect(lp.text_offset![i]).toBeGreaterThanOrEqual(lp.text_offset![i - 1]);
    }
    if (!lp.tokens!.some((t) => t.startsWith('bytes:'))) expect(lp.tokens!.join('')).toBe(r.choices[0].text);
    const stream = await client.completions.create({ ...params, stream: true });
    const streamed: number[] = [];
    const offsets: number[] = [];
    for await (const c of stream) {
      if (c.choices[0]?.logprobs) {
        streamed.push(...c.choices[0].logprobs.token_logprobs!);
        offsets.push(...c.choices[0].logprobs.text_offset!);
      }
    }
    expect(streamed).toEqual(lp.token_logprobs);
    expect(offsets).toEqual(lp.text_offset);
  });
});

describe('chat completions', () => {
  const messages = [
    { role: 'system' as const, content: 'You are terse.' },
    { role: 'user' as const, content: 'Hi' },
    { role: 'assistant' as const, content: 'Hello.' },
    { role: 'user' as const, content: 'What is 2+2? <|im_end|>' },
  ];

  test('non-stream: message, usage from the ChatML prompt; equals model.chatStream', async () => {
    const r = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0 });
    let want = '';
    for await (const c of model.chatStream(messages, { maxNewTokens: 10, temperature: 0 })) want += c.text;
    expect(r.object).toBe('chat.completion');
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.choices[0].message.role).toBe('assistant');
    expect(r.choices[0].message.content).toBe(want);
    expect(r.choices[0].logprobs).toBeNull();
    const promptTokens = makeContext(model.tokenizer, messages[3].content, { system: 'You are terse.', history: [['Hi', 'Hello.']] }).ids.length;
    expect(r.usage!.prompt_tokens).toBe(promptTokens);
    expect(r.usage!.total_tokens).toBe(promptTokens + r.usage!.completion_tokens);
    expect(['stop', 'length']).toContain(r.choices[0].finish_reason);
    if (r.choices[0].finish_reason === 'length') expect(r.usage!.completion_tokens).toBe(10);
  });

  test('greedy stream equals non-stream; role first, one finish chunk, usage chunk', async () => {
    const params = { model: 'tiny', messages, max_tokens: 14, temperature: 0, seed: 3 };
    const whole = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const roles: string[] = [];
    const finishes: string[] = [];
    let usage;
    for await (const c of stream) {
      expect(c.object).toBe('chat.completion.chunk');
      for (const ch of c.choices) {
        if (ch.delta.role) roles.push(ch.delta.role);
        text += ch.delta.content ?? '';
        if (ch.finish_reason) finishes.push(ch.finish_reason);
      }
      if (c.usage) usage = c.usage;
    }
    expect(roles).toEqual(['assistant']);
    expect(text).toBe(whole.choices[0].message.content);
    expect(finishes).toEqual([whole.choices[0].finish_reason]);
    expect(usage).toEqual(whole.usage);
  });

  test('max_completion_tokens works like max_tokens; text parts are joined', async () => {
    const a = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hi there' }], max_completion_tokens: 5, temperature: 0 });
    const b = await client.chat.completions.create({
      model: 'tiny',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi ' }, { type: 'text', text: 'there' }] }],
      max_tokens: 5,
      temperature: 0,
    });
    expect(a.choices[0].message.content).toBe(b.choices[0].message.content);
    expect(a.usage).toEqual(b.usage);
    expect(a.usage!.completion_tokens).toBeLessThanOrEqual(5);
  });

  test('logprobs: chat content format with top_logprobs; streamed the same', async () => {
    const params = { model: 'tiny', messages: [{ role: 'user' as const, content: 'Hi' }], max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2 };
    const r = await client.chat.completions.create(params);
    const content = r.choices[0].logprobs!.content!;
    expect(content.length).toBeGreaterThan(0);
    for (const e of content) {
      expect(typeof e.token).toBe('string');
      expect(e.logprob).toBeLessThanOrEqual(0);
      expect(Array.isArray(e.bytes)).toBe(true);
      expect(e.top_logprobs).toHaveLength(2);
      expect(e.top_logprobs[0].logprob).toBeGreaterThanOrEqual(e.top_logprobs[1].logprob);
      expect(e.logprob).toBeCloseTo(e.top_logprobs[0].logprob, 6); // greedy: the best one
      if (!e.token.startsWith('bytes:')) expect(Buffer.from(e.bytes!).toString('utf8')).toBe(e.token);
    }
    expect(Buffer.concat(content.map((e) => Buffer.from(e.bytes!))).toString('utf8')).toBe(r.choices[0].message.content);
    const stream = await client.chat.completions.create({ ...params, stream: true });
    const streamed: number[] = [];
    for await (const c of stream) for (const ch of c.choices) streamed.push(...(ch.logprobs?.content ?? []).map((e) => e.logprob));
    expect(streamed).toEqual(content.map((e) => e.logprob));
  });
});

describe('other routes', () => {
  test('/v1/models lists the served model', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(['tiny']);
    expect(list.data[0].object).toBe('model');
    expect((await client.models.retrieve('tiny')).id).toBe('tiny');
    await expect(client.models.retrieve('gpt-4')).rejects.toMatchObject({ status: 404 });
  });

  test('/health', async () => {
    const r = await fetch(`${base}/health`);
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ status: 'ok', model: 'tiny', running: 0, waiting: 0 });
  });

  test('/metrics: Prometheus text with the metric names; requests are counted by route and status', async () => {
    const scrape = async () => {
      const r = await fetch(`${base}/metrics`);
      expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
      return r.text();
    };
    const count = (text: string, route: string, status: string) => {
      const m = new RegExp(`^qwen_requests_total\\{route="${route.replace(/\//g, '\\/')}",status="${status}"\\} (\\d+)`, 'm').exec(text);
      return m ? Number(m[1]) : 0;
    };
    const before = await scrape();
    await client.completions.create({ model: 'tiny', prompt: 'Hi', max_tokens: 3 });
    await postJson(`${base}/v1/completions`, { prompt: 'Hi', temperature: 9 });
    const after = await scrape();
    expect(count(after, '/v1/completions', '200')).toBe(count(before, '/v1/completions', '200') + 1);
    expect(count(after, '/v1/completions', '400')).toBe(count(before, '/v1/completions', '400') + 1);
    for (const name of [
      'qwen_requests_total',
      'qwen_errors_total',
      'qwen_time_to_first_token_seconds_bucket',
      'qwen_time_per_output_token_seconds_bucket',
      'qwen_running_sequences',
      'qwen_waiting_sequences',
      'qwen_kv_blocks_used',
      'qwen_kv_blocks_free',
      'qwen_generated_tokens_total',
      'qwen_prompt_tokens_total',
    ]) {
      expect(after).toMatch(new RegExp(`^${name}`, 'm'));
    }
    expect(after).toMatch(/^qwen_errors_total\{route="\/v1\/completions",code="invalid_parameter"\} [1-9]/m);
    expect(after).toMatch(/^qwen_running_sequences 0$/m);
  });
});

describe('errors', () => {
  const bad: Array<[string, string, Record<string, unknown>, string]> = [
    ['completions', 'temperature > 2', { prompt: 'x', temperature: 2.5 }, 'temperature'],
    ['completions', 'temperature as a string', { prompt: 'x', temperature: '0.5' }, 'temperature'],
    ['completions', 'top_p > 1', { prompt: 'x', top_p: 1.5 }, 'top_p'],
    ['completions', 'top_p 0', { prompt: 'x', top_p: 0 }, 'top_p'],
    ['completions', 'n = 2', { prompt: 'x', n: 2 }, 'n'],
    ['completions', 'missing prompt', { max_tokens: 3 }, 'prompt'],
    ['completions', 'empty prompt', { prompt: '' }, 'prompt'],
    ['completions', 'a batch of prompts', { prompt: ['a', 'b'] }, 'prompt'],
    ['completions', 'a bad token id', { prompt: [1, 2, -5] }, 'prompt[2]'],
    ['completions', 'max_tokens 0', { prompt: 'x', max_tokens: 0 }, 'max_tokens'],
    ['completions', 'max_tokens 1.5', { prompt: 'x', max_tokens: 1.5 }, 'max_tokens'],
    ['completions', 'logprobs 6', { prompt: 'x', logprobs: 6 }, 'logprobs'],
    ['completions', 'presence_penalty 3', { prompt: 'x', presence_penalty: 3 }, 'presence_penalty'],
    ['completions', 'frequency_penalty -2.5', { prompt: 'x', frequency_penalty: -2.5 }, 'frequency_penalty'],
    ['completions', 'five stop strings', { prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    ['completions', 'an empty stop string', { prompt: 'x', stop: ['a', ''] }, 'stop[1]'],
    ['completions', 'top_k -2', { prompt: 'x', top_k: -2 }, 'top_k'],
    ['completions', 'repetition_penalty 0', { prompt: 'x', repetition_penalty: 0 }, 'repetition_penalty'],
    ['completions', 'seed 1.5', { prompt: 'x', seed: 1.5 }, 'seed'],
    ['completions', 'echo', { prompt: 'x', echo: true }, 'echo'],
    ['completions', 'best_of 3', { prompt: 'x', best_of: 3 }, 'best_of'],
    ['chat/completions', 'missing messages', { max_tokens: 3 }, 'messages'],
    ['chat/completions', 'empty messages', { messages: [] }, 'messages'],
    ['chat/completions', 'bad role', { messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role'],
    ['chat/completions', 'content not a string', { messages: [{ role: 'user', content: 5 }] }, 'messages[0].content'],
    ['chat/completions', 'image part', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages[0].content[0]'],
    ['chat/completions', 'assistant last', { messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }] }, 'messages[1].role'],
    ['chat/completions', 'two users in a row', { messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }] }, 'messages[1].role'],
    ['chat/completions', 'top_logprobs without logprobs', { messages: [{ role: 'user', content: 'a' }], top_logprobs: 2 }, 'top_logprobs'],
    ['chat/completions', 'top_logprobs 21', { messages: [{ role: 'user', content: 'a' }], logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
    ['chat/completions', 'temperature -1', { messages: [{ role: 'user', content: 'a' }], temperature: -1 }, 'temperature'],
    ['chat/completions', 'tools', { messages: [{ role: 'user', content: 'a' }], tools: [{ type: 'function' }] }, 'tools'],
  ];
  test.each(bad)('%s: %s -> 400 naming %s', async (route, _what, body, param) => {
    for (const stream of [false, true]) {
      const r = await postJson(`${base}/v1/${route}`, { model: 'tiny', ...body, ...(stream ? { stream: true } : {}) });
      expect({ status: r.status, param: r.json?.error?.param }).toEqual({ status: 400, param });
      expect(r.json.error.type).toBe('invalid_request_error');
      expect(r.json.error.message).toContain(param);
      expect(typeof r.json.error.code).toBe('string');
    }
  });

  test('the openai client sees BadRequestError with the param', async () => {
    await expect(client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'a' }], temperature: 5 })).rejects.toMatchObject({
      status: 400,
      param: 'temperature',
    });
    await expect(client.completions.create({ model: 'tiny', prompt: 'a', n: 2 })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
  });

  test('bad JSON, a non-object body, an unknown model, an unknown route', async () => {
    const r1 = await fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt": ' });
    expect(r1.status).toBe(400);
    expect((await r1.json()).error.type).toBe('invalid_request_error');
    const r2 = await postJson(`${base}/v1/completions`, [1, 2]);
    expect(r2.status).toBe(400);
    const r3 = await postJson(`${base}/v1/completions`, { model: 'gpt-4', prompt: 'x' });
    expect([r3.status, r3.json.error.param, r3.json.error.code]).toEqual([404, 'model', 'model_not_found']);
    const r4 = await fetch(`${base}/v1/embeddings`, { method: 'POST' });
    expect(r4.status).toBe(404);
    expect((await r4.json()).error.code).toBe('not_found');
  });

  test('413 when the prompt (+ max_tokens) exceeds model.contextLimit', async () => {
    const limit = model.contextLimit;
    const long = Array.from({ length: limit }, (_, i) => 100 + (i % 1000));
    for (const stream of [false, true]) {
      const r = await postJson(`${base}/v1/completions`, { prompt: long, max_tokens: 1, stream });
      expect([r.status, r.json.error.param, r.json.error.code]).toEqual([413, 'prompt', 'context_length_exceeded']);
    }
    const r2 = await postJson(`${base}/v1/completions`, { prompt: 'Hello', max_tokens: limit });
    expect([r2.status, r2.json.error.param]).toEqual([413, 'max_tokens']);
    const r3 = await postJson(`${base}/v1/chat/completions`, { messages: [{ role: 'user', content: 'hi' }], max_tokens: limit });
    expect([r3.status, r3.json.error.param]).toEqual([413, 'max_tokens']);
    expect(idle()).toBe(true);
  });
});

describe('queue full (429) and disconnects', () => {
  // One sequence per step and a model queue of 1: a second request waits, a third is refused.
  let model2: Model;
  let app2: FastifyInstance; // no queue limit of its own: the model's E_QUEUE_FULL
  let app3: FastifyInstance; // maxQueue 1 on the server
  let base2: string;
  let base3: string;
  beforeAll(async () => {
    model2 = await loadModel(dir, { device: 'cpu', maxBatchSequences: 1, maxQueue: 1 });
    app2 = createServer(model2, { modelName: 'tiny', processMetrics: false });
    app3 = createServer(model2, { modelName: 'tiny', processMetrics: false, maxQueue: 1 });
    base2 = await listen(app2);
    base3 = await listen(app3);
  });
  afterAll(async () => {
    await app2?.close();
    await app3?.close();
    await model2?.dispose();
  });
  const idle2 = () => {
    const s = model2.stats();
    return s.running === 0 && s.waiting === 0 && s.kvBlocksUsed === 0;
  };

  test('429 from the model queue and from the server maxQueue, before any SSE header; disconnects free everything', async () => {
    const body = { prompt: 'Once upon a time', max_tokens: 2000, temperature: 0, stream: true, stop: null };
    let firstA = false;
    let stopA = false;
    // A: running; read until told to stop, then disconnect.
    const a = postSse(`${base2}/v1/completions`, body, () => {
      firstA = true;
      return stopA;
    });
    await waitFor(() => firstA, 20000, 'the first chunk of A');
    // B: waits behind A (one sequence per step); its headers are not sent while it waits.
    const bAbort = new AbortController();
    const b = fetch(`${base2}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: bAbort.signal }).catch((e) => e);
    await waitFor(() => model2.stats().waiting === 1, 20000, 'B waiting');
    for (const stream of [true, false]) {
      const c = await postJson(`${base2}/v1/completions`, { ...body, stream });
      expect([c.status, c.json.error.code, c.json.error.type]).toEqual([429, 'queue_full', 'rate_limit_error']);
      expect(c.headers.get('retry-after')).toBe('1');
      const d = await postJson(`${base3}/v1/chat/completions`, { messages: [{ role: 'user', content: 'x' }], stream });
      expect([d.status, d.json.error.code]).toEqual([429, 'queue_full']);
    }
    await expect(
      new OpenAI({ baseURL: `${base2}/v1`, apiKey: 'x', maxRetries: 0 }).completions.create({ model: 'tiny', prompt: 'x', max_tokens: 2 }),
    ).rejects.toBeInstanceOf(OpenAI.RateLimitError);
    // B disconnects while queued: it leaves the queue.
    bAbort.abort();
    await b;
    await waitFor(() => model2.stats().waiting === 0, 20000, 'B leaving the queue');
    expect(model2.stats().running).toBe(1);
    // A disconnects mid-stream: its generation is aborted and its KV blocks return.
    stopA = true;
    const ra = await a;
    expect(ra.done).toBe(false);
    await waitFor(idle2, 20000, 'model2 idle');
    expect(model2.activeSequences).toBe(0);
  });

  test('a non-stream request whose client leaves is aborted too', async () => {
    const ac = new AbortController();
    const p = fetch(`${base2}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Hello', max_tokens: 5000, temperature: 0, stop: null }),
      signal: ac.signal,
    }).catch((e) => e);
    await waitFor(() => model2.stats().running === 1, 20000, 'running');
    const steps = model2.stats().steps;
    await waitFor(() => model2.stats().steps > steps + 3, 20000, 'a few steps');
    ac.abort();
    await p;
    await waitFor(idle2, 20000, 'model2 idle');
    expect(model2.stats().generatedTokens).toBeLessThan(5000);
  });
});

describe('timeouts and drain', () => {
  test('requestTimeoutMs: 504 (non-stream) or an error event (stream started); the generation is stopped', async () => {
    const t = createServer(model, { modelName: 'tiny', processMetrics: false, requestTimeoutMs: 1500 });
    const url = await listen(t);
    try {
      const r = await postJson(`${url}/v1/completions`, { prompt: 'Hello', max_tokens: 20000, temperature: 0, stop: null });
      expect([r.status, r.json.error.code, r.json.error.type]).toEqual([504, 'timeout', 'timeout_error']);
      const s = await postSse(`${url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 20000, temperature: 0, stream: true });
      expect(s.status).toBe(200); // started before the deadline
      const last = s.events[s.events.length - 2] as { error?: { code: string } };
      expect(last.error?.code).toBe('timeout');
      expect(s.done).toBe(true);
      await waitFor(idle, 20000, 'idle');
    } finally {
      await t.close();
    }
  });

  test('close() with drainTimeoutMs: new requests get 503, the stream in flight is stopped at the deadline', async () => {
    const t = createServer(model, { modelName: 'tiny', processMetrics: false, drainTimeoutMs: 300 });
    const url = await listen(t);
    let closing: Promise<unknown> | undefined;
    const s = await postSse(`${url}/v1/completions`, { prompt: 'Hello', max_tokens: 20000, temperature: 0, stop: null, stream: true }, (_e, i) => {
      if (i === 0) closing = t.close();
    });
    expect(s.status).toBe(200);
    const last = s.events[s.events.length - 2] as { error?: { code: string } };
    expect(last.error?.code).toBe('draining');
    await closing;
    await waitFor(idle, 20000, 'idle');
  });

  test('while draining, a request arriving on a connection still open gets 503 in OpenAI format', async () => {
    const t = createServer(model, { modelName: 'tiny', processMetrics: false });
    const url = await listen(t);
    const port = Number(new URL(url).port);
    // A connection whose request is half sent when close() starts (so it is not idle and stays open).
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    let reply = '';
    sock.on('data', (d) => (reply += d));
    const payload = '{"prompt":"x","max_tokens":2}';
    sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${payload.length}\r\n`);
    let closing: Promise<unknown> | undefined;
    const s = await postSse(`${url}/v1/completions`, { prompt: 'Hello', max_tokens: 40, temperature: 0, stop: null, stream: true }, (_e, i) => {
      if (i === 0) {
        closing = t.close();
        sock.write(`\r\n${payload}`);
      }
    });
    expect(s.done).toBe(true); // the request in flight ran to its end
    await closing;
    await waitFor(() => reply.includes('}}'), 10000, 'the 503 reply');
    sock.destroy();
    expect(reply).toMatch(/^HTTP\/1\.1 503/);
    expect(JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4).replace(/^[0-9a-f]+\r\n/, '').split('\r\n')[0]).error.code).toBe('draining');
  });
});

describe('serve CLI', () => {
  const bin = path.join(__dirname, '..', 'bin', 'qwen-node.js');
  const built = fs.existsSync(path.join(__dirname, '..', 'dist', 'server', 'index.js'));
  (built ? test : test.skip)('SIGTERM: stops accepting, lets the stream in flight finish, exits 0', async () => {
    const child: ChildProcess = spawn(process.execPath, [bin, 'serve', '--model', dir, '--port', '0', '--host', '127.0.0.1', '--device', 'cpu', '--model-name', 'tiny', '--quiet'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor(() => /^http:\/\/\S+\n/.test(stdout), 60000, `the URL line (stderr: ${stderr})`);
      const url = stdout.split('\n')[0];
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect((await fetch(`${url}/health`)).status).toBe(200);
      let signalled = false;
      const reply = postSse(`${url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 48, temperature: 0, stop: null, stream: true }, () => {
        if (!signalled) {
          signalled = true;
          child.kill('SIGTERM');
        }
      });
      const r = await reply;
      expect(signalled).toBe(true);
      expect(r.done).toBe(true); // the stream in flight ran to its end
      const finish = (r.events as any[]).find((e) => e !== '[DONE]' && e.choices[0].finish_reason)?.choices[0].finish_reason;
      expect(['length', 'stop']).toContain(finish);
      // No new work is accepted any more: refused or 503.
      const late = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt":"x"}' }).then(
        (x) => x.status,
        () => 'refused',
      );
      expect([503, 'refused']).toContain(late);
      expect(await exited).toBe(0);
      expect(stderr).toMatch(/draining/);
    } finally {
      child.kill('SIGKILL');
    }
  }, 120000);
});
