/**
 * Overlapped steps (lib/model/scheduler.ts "Overlapped steps"): Sequence.forwardPickNext queues a pick behind the
 * pending one, fed with the id that one makes and with that id added to its penalty list; generate() keeps one such
 * pick queued ahead, and a step whose answered sequences are all chained is launched before its answers are delivered.
 * Checked here: the chained picks equal forwardPick one step at a time (ids and logprobs, every penalty mode, the
 * pending pick made or not yet made), the errors, that a lockstep sequence in the batch keeps every step, and that a
 * generation that stops with a pick queued ahead returns its blocks.
 */
import { QwenError } from '../lib/errors';
import { loadModel, type Model, Sequence } from '../lib/model/model';
import type { StepStats } from '../lib/model/scheduler';
import * as stepPack from '../lib/native/stepPack';
import { type SamplerConfig, createSampler } from '../lib/sampling';
import type { PickResult } from '../lib/types';
import { tsPath, useTinyModel } from './helpers/nativePath';

const t = useTinyModel('cpu');
let model: Model;
beforeAll(() => {
  model = t.model;
});

const N = 24;
const promptOf = (m: Model) => m.tokenizer.encode('The capital of France is the capital of');
const cfgOf = (m: Model, over: Partial<SamplerConfig>): SamplerConfig => ({
  doSample: false, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, tokenizerVocabSize: m.tokenizer.vocabSize, ...over,
});

/** N picks by forwardPick, each request made after the previous pick was accepted: the reference. Each request is
 *  a copy, which the scheduler sends whole ('given'), not as the ids added since the last one. */
async function stepwise(m: Model, cfg: SamplerConfig): Promise<PickResult[]> {
  const prompt = promptOf(m);
  const s = createSampler(cfg, prompt);
  const seq = m.createSequence();
  try {
    const out: PickResult[] = [];
    let p = await seq.forwardPick(prompt, { ...s.pickRequest()! });
    for (;;) {
      out.push(p);
      s.accept([p.id]);
      if (out.length === N) return out;
      p = await seq.forwardPick([p.id], { ...s.pickRequest()! });
    }
  } finally {
    seq.dispose();
  }
}

/** The same N picks chained as generate() does, each request made before the pending pick is known. At the steps in
 *  `late`, the pending pick is awaited first, so forwardPickNext follows a pick that is made already. */
async function chained(m: Model, cfg: SamplerConfig, late: (k: number) => boolean): Promise<PickResult[]> {
  const prompt = promptOf(m);
  const s = createSampler(cfg, prompt);
  const seq: Sequence = m.createSequence();
  try {
    const out: PickResult[] = [];
    let pending = seq.forwardPick(prompt, s.pickRequest()!);
    let queued: Promise<PickResult> | null = seq.forwardPickNext(s.pickRequest()!);
    while (out.length < N) {
      const p = await pending;
      out.push(p);
      s.accept([p.id]);
      if (!queued) break;
      pending = queued;
      if (out.length + 1 >= N) queued = null;
      else {
        if (late(out.length)) await pending; // made (and its answer delivered) before its follower is queued
        queued = seq.forwardPickNext(s.pickRequest()!);
      }
    }
    return out;
  } finally {
    seq.dispose();
  }
}

// rp 0.5 doubles every positive logit of the prompt and of the picks, so the tiny random model's greedy picks change
// with the list (checked below); the presence and frequency penalties take the 'generated' list alone.
const MODES: Array<[string, Partial<SamplerConfig>]> = [
  ['repetition penalty (every id)', { repetitionPenalty: 0.5, logprobs: 3 }],
  ['presence + frequency (generated ids)', { presencePenalty: -4, frequencyPenalty: -2, logprobs: 0 }],
  ['sampled, all penalties', { doSample: true, temperature: 0.8, topP: 0.9, repetitionPenalty: 0.5, presencePenalty: -1, frequencyPenalty: -1, seed: 9, logprobs: 2 }],
  ['greedy, no penalty', {}],
];

test.each(MODES)('chained picks equal forwardPick step by step: %s', async (_name, over) => {
  const cfg = cfgOf(model, over);
  const want = await stepwise(model, cfg);
  expect(await chained(model, cfg, () => false)).toEqual(want);
  expect(await chained(model, cfg, (k) => k % 3 === 1)).toEqual(want);
  if (over.repetitionPenalty !== undefined || over.presencePenalty !== undefined) {
    // the penalty list matters: without the penalties the picks differ
    const plain = await stepwise(model, cfgOf(model, { ...over, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 }));
    expect(plain.map((p) => p.id)).not.toEqual(want.map((p) => p.id));
  }
}, 60000);

test('a sampler\'s penalty list crosses over whole once, then only the ids added since (kept by the sequence)', async () => {
  const spy = jest.spyOn(stepPack, 'packStep');
  const cfg = cfgOf(model, { repetitionPenalty: 0.5, presencePenalty: -1 });
  try {
    const want = await stepwise(model, cfg); // whole lists ('given')
    const wantModes = spy.mock.calls.map((c) => c[0][0].pickList ?? 'given');
    spy.mockClear();
    expect(await chained(model, cfg, (k) => k % 3 === 1)).toEqual(want);
    const items = spy.mock.calls.map((c) => c[0][0]);
    spy.mockClear();
    expect(wantModes).toEqual(new Array(N).fill('given'));
    // chained: the whole list once; then each step adds only its pickAppend (the pending pick), which the sampler
    // counts by the next request
    expect(items.map((it) => it.pickList)).toEqual(['hold', ...new Array(N - 1).fill('add')]);
    expect(items.slice(1).map((it) => [it.pickAdds!.length, it.pickAppend! >= 0])).toEqual(new Array(N - 1).fill([0, true]));
    // forwardPick one step at a time with the sampler's own requests: each adds the one id accepted since
    const s = createSampler(cfg, promptOf(model));
    const seq = model.createSequence();
    try {
      let p = await seq.forwardPick(promptOf(model), s.pickRequest()!);
      for (let k = 1; k < 6; k++) {
        s.accept([p.id]);
        p = await seq.forwardPick([p.id], s.pickRequest()!);
        expect(p).toEqual(want[k]);
      }
    } finally {
      seq.dispose();
    }
    const steps = spy.mock.calls.map((c) => c[0][0]);
    expect(steps.map((it) => it.pickList)).toEqual(['hold', 'add', 'add', 'add', 'add', 'add']);
    expect(steps.slice(1).map((it) => Array.from(it.pickAdds!))).toEqual(want.slice(0, 5).map((p) => [p.id]));
    spy.mockClear();
    // Whole again ('hold') where the kept list could be wrong: a request given other arrays, and a chained pick whose
    // appended id the sampler did not count next (it accepted another one)
    const s2 = createSampler(cfg, promptOf(model));
    const seq2 = model.createSequence();
    try {
      let p = await seq2.forwardPick(promptOf(model), s2.pickRequest()!);
      s2.accept([p.id]);
      const r = s2.pickRequest()!;
      r.ids = r.ids.slice(); // the sampler's request, given other arrays (same values)
      p = await seq2.forwardPick([p.id], r);
      s2.accept([p.id]);
      p = await seq2.forwardPick([p.id], s2.pickRequest()!);
      const q = seq2.forwardPickNext(s2.pickRequest()!); // appends p's pick
      const made = await p;
      s2.accept([(made.id + 1) % 1000]); // not what was appended
      await q;
      await seq2.forwardPickNext(s2.pickRequest()!);
    } finally {
      seq2.dispose();
    }
    expect(spy.mock.calls.map((c) => c[0][0].pickList)).toEqual(['hold', 'hold', 'add', 'add', 'hold']);
  } finally {
    spy.mockRestore();
  }
}, 60000);

test('forwardPickNext needs a pick before it; a pick that fails or is aborted takes its follower with it', async () => {
  const prompt = promptOf(model);
  const s = createSampler(cfgOf(model, {}), prompt);
  const code = async (p: Promise<unknown>) => p.then(() => 'resolved', (e: unknown) => (e instanceof QwenError ? e.code : String(e)));
  const seq = model.createSequence();
  try {
    expect(await code(seq.forwardPickNext(s.pickRequest()!))).toBe('E_BAD_ARG'); // nothing before it
    await seq.forward(prompt);
    expect(await code(seq.forwardPickNext(s.pickRequest()!))).toBe('E_BAD_ARG'); // after logits, not a pick
    expect(await code(seq.forwardPick([1], { ...s.pickRequest()!, topLogprobs: 21 }))).toBe('E_BAD_ARG');
    expect(await code(seq.forwardPickNext(s.pickRequest()!))).toBe('E_BAD_ARG'); // after a refused pick
    const ac = new AbortController();
    const parent = seq.forwardPick([1], s.pickRequest()!, { signal: ac.signal });
    const child = seq.forwardPickNext(s.pickRequest()!);
    const grandchild = seq.forwardPickNext(s.pickRequest()!);
    ac.abort(); // before the step starts (steps start from setImmediate)
    expect(await Promise.all([parent, child, grandchild].map(code))).toEqual(['E_ABORTED', 'E_ABORTED', 'E_ABORTED']);
    expect(seq.length).toBe(prompt.length); // nothing was fed
    expect(await code(seq.forwardPickNext(s.pickRequest()!))).toBe('E_BAD_ARG');
    // the sequence goes on: a pick, then its follower
    const p = await seq.forwardPick([1], s.pickRequest()!);
    const q = await seq.forwardPickNext(s.pickRequest()!); // the pick is made: it feeds that id
    expect(seq.length).toBe(prompt.length + 2);
    expect(p.id).toBeGreaterThanOrEqual(0);
    expect(q.id).toBeGreaterThanOrEqual(0);
  } finally {
    seq.dispose();
  }
  expect(await code(seq.forwardPickNext(s.pickRequest()!))).toBe('E_DISPOSED');
}, 60000);

test('generate(): steps overlap only when every sequence answered is chained; a lockstep sequence keeps every step', async () => {
  const runs: Array<{ overlap: boolean; mixed: boolean; steps: StepStats[]; tokens: number[]; nexts: number }> = [];
  const spy = jest.spyOn(Sequence.prototype, 'forwardPickNext');
  for (const overlap of [true, false]) {
    const m = overlap ? model : await loadModel(t.dir, { device: 'cpu', overlapSteps: false });
    try {
      for (const mixed of [false, true]) {
        const steps: StepStats[] = [];
        const off = m.onStep((s) => steps.push(s));
        const opts = { doSample: false, repetitionPenalty: 1.1, maxNewTokens: N };
        const gens = ['Hello there', '1, 2, 3', 'def fib(n):'].map((p) => m.generate(p, opts).result());
        // mixed: a fourth generation samples in TS on the logits (seq.forward, no forwardPickNext): lockstep
        if (mixed) gens.push(tsPath(m, 'x', opts));
        const res = await Promise.all(gens);
        off();
        runs.push({ overlap, mixed, steps, tokens: res.map((r) => r.usage.completionTokens), nexts: spy.mock.calls.length });
        spy.mockClear();
      }
    } finally {
      if (!overlap) await m.dispose();
    }
  }
  spy.mockRestore();
  expect(runs[2].steps[0].gapMs).toBeNull(); // the first step of a fresh model follows no other
  for (const r of runs) {
    expect(r.tokens.every((n) => n === N)).toBe(true);
    // picks queued ahead only where they can overlap: N - 1 per native generation, none in lockstep
    expect(r.nexts).toBe(r.overlap ? 3 * (N - 1) : 0);
    // all prompts fit the first step: one step per token (+ a wasted one at most, queued ahead of the last pick)
    expect(r.steps.length).toBeLessThanOrEqual(N + 1);
    const overlapped = r.steps.filter((s) => s.overlapped).length;
    // every step but the first launched right after another's result: its host gap is known
    for (const s of r.steps.slice(1)) expect(s.gapMs).toBeGreaterThanOrEqual(0);
    // every step after the first is launched ahead of its predecessor's answers, unless lockstep (the option, or a
    // sequence answered in every step that resubmits only when its answer has run)
    expect(overlapped).toBe(r.overlap && !r.mixed ? r.steps.length - 1 : 0);
  }
}, 60000);

test('a failed step fails its picks\' followers, and answers a sequence disposed during it', async () => {
  const code = async (p: Promise<unknown>) => p.then(() => 'resolved', (e: unknown) => (e instanceof QwenError ? e.code : String(e)));
  const s = createSampler(cfgOf(model, { repetitionPenalty: 1.2 }), [1, 2, 3]);
  const a = model.createSequence(), b = model.createSequence();
  try {
    const req = s.pickRequest()!;
    const parent = a.forwardPick([1, 2, 3], req);
    const child = a.forwardPickNext(s.pickRequest()!);
    const other = b.forward([4, 5]);
    req.ids[1] = req.ids[0]; // changed after forwardPick: the addon refuses the step (step-pack.test.ts)
    await new Promise((r) => setImmediate(r)); // the step has started
    b.dispose(); // its forward is in the step: answered when the step ends
    expect(await Promise.all([parent, child, other].map(code))).toEqual(['E_BACKEND', 'E_BACKEND', 'E_BACKEND']);
    const again = await a.forwardPick([1, 2, 3], s.pickRequest()!); // the model goes on
    expect(again.id).toBeGreaterThanOrEqual(0);
  } finally {
    a.dispose();
    b.dispose();
  }
}, 60000);

test('a generation that stops with a pick queued ahead drops it and returns its blocks', async () => {
  const opts = { doSample: true, seed: 4, temperature: 1, maxNewTokens: 40 };
  const full = await model.generate('Once upon a time', opts).result();
  expect(full.finishReason).toBe('length');
  // stop at the text of the 10th token: the 11th pick is already queued (or in a step) when the loop sees it
  const stop = model.tokenizer.decode(full.tokens.slice(9, 10));
  const cut = full.text.indexOf(stop);
  expect(cut).toBeGreaterThanOrEqual(0);
  const stopped = await model.generate('Once upon a time', { ...opts, stop: [stop] }).result();
  expect(stopped.finishReason).toBe('stop');
  expect(stopped.text).toBe(full.text.slice(0, cut));
  expect(stopped.usage.completionTokens).toBeLessThan(40);
  await new Promise((r) => setTimeout(r, 20)); // a step that held the dropped pick ends
  expect(model.stats()).toMatchObject({ running: 0, waiting: 0, kvBlocksUsed: 0 });
}, 60000);
