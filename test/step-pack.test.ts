/**
 * The packed step (lib/native/stepPack.ts -> cpp/addon/model_wrap.cc Step): the layout both sides agree on, the
 * addon's checks of every length and range (a malformed batch throws and leaves the model usable, never reads past an
 * array), and the picks coming back as the requests asked for them.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { NativeModel, NativePickRequest, NativeSequence, NativeStepBatch, NativeStepResult } from '../lib/native/types';
import { MAX_PICK_TOP, NativeStepItem, PICK_FIELDS, packStep, unpackPick } from '../lib/native/stepPack';
import { useTinyModel } from './helpers/nativePath';

const greedy = (over: Partial<NativePickRequest> = {}): NativePickRequest => ({
  repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, ids: new Int32Array(0), counts: new Int32Array(0),
  vocabLimit: 151851, ...over,
});

test('PICK_FIELDS is the order of cpp/addon/convert.h PickField', () => {
  const h = fs.readFileSync(path.join(__dirname, '..', 'cpp', 'addon', 'convert.h'), 'utf8');
  const body = /enum PickField \{([^}]*)\}/.exec(h)![1].replace(/\/\*[^*]*\*\//g, '');
  const names = body.split(',').map((s) => s.trim()).filter((s) => s !== '' && s !== 'kPickFields');
  const camel = (k: string) => k.slice(3, 4).toLowerCase() + k.slice(4); // kPfVocabLimit -> vocabLimit
  const alias: Record<string, string> = { repetition: 'repetitionPenalty', presence: 'presencePenalty', frequency: 'frequencyPenalty' };
  expect(names.map((k) => alias[camel(k)] ?? camel(k))).toEqual([...PICK_FIELDS]);
});

test('packStep lays out items, ids, pick rows and penalty lists in item order', () => {
  const seq = {} as NativeSequence;
  const sampled = greedy({
    doSample: true, temperature: 0.7, topK: 5, topP: 0.8, u: 0.25, repetitionPenalty: 1.1, presencePenalty: 0.5,
    frequencyPenalty: 0.25, ids: Int32Array.from([7, 3]), counts: Int32Array.from([0, 2]), topLogprobs: 3, vocabLimit: 1000,
  });
  const items: NativeStepItem[] = [
    { seq, ids: Int32Array.from([1, 2, 3]), logits: 0, promptLength: 3 },
    { seq, ids: Int32Array.from([4]), logits: 1, promptLength: 0, pick: greedy({ ids: Int32Array.from([9]), counts: Int32Array.from([1]) }) },
    { seq, ids: Int32Array.from([5, 6]), logits: 2, promptLength: 0 },
    { seq, ids: Int32Array.from([8]), logits: 1, promptLength: 0, pick: sampled },
  ];
  const b = packStep(items);
  expect(b.seqs).toHaveLength(4);
  expect(Array.from(b.items)).toEqual([3, 0, 3, -1, 1, 1, 0, 1, 2, 2, 0, -1, 1, 1, 0, 2]);
  expect(Array.from(b.ids)).toEqual([1, 2, 3, 4, 5, 6, 8]);
  expect(Array.from(b.penaltyIds)).toEqual([9, 7, 3]);
  expect(Array.from(b.penaltyCounts)).toEqual([1, 0, 2]);
  // each row read back by field name: absent topLogprobs -1, doSample 0 | 1, a greedy row's warpers at their no-ops
  const row = (k: number) => Object.fromEntries(PICK_FIELDS.map((f, j) => [f, b.picks[k * PICK_FIELDS.length + j]]));
  expect(b.picks).toHaveLength(2 * PICK_FIELDS.length);
  expect(row(0)).toEqual({
    vocabLimit: 151851, topLogprobs: -1, doSample: 0, temperature: 1, topK: 0, topP: 1, u: 0,
    repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, listMode: 0,
  });
  expect(row(1)).toEqual({
    vocabLimit: 1000, topLogprobs: 3, doSample: 1, temperature: 0.7, topK: 5, topP: 0.8, u: 0.25,
    repetitionPenalty: 1.1, presencePenalty: 0.5, frequencyPenalty: 0.25, listMode: 0,
  });
});

test('packStep adds pickAppend to the penalty list as generated, when a penalty is on', () => {
  const seq = {} as NativeSequence;
  const list = { ids: Int32Array.from([7, 3, 11]), counts: Int32Array.from([0, 2, 1]) };
  const items: NativeStepItem[] = [
    { seq, ids: Int32Array.from([3]), logits: 1, promptLength: 0, pick: greedy({ repetitionPenalty: 1.1, ...list }), pickAppend: 3 }, // counted
    { seq, ids: Int32Array.from([7]), logits: 1, promptLength: 0, pick: greedy({ presencePenalty: 0.5, ...list }), pickAppend: 7 }, // 0 -> 1
    { seq, ids: Int32Array.from([5]), logits: 1, promptLength: 0, pick: greedy({ frequencyPenalty: -1, ...list }), pickAppend: 5 }, // new
    { seq, ids: Int32Array.from([5]), logits: 1, promptLength: 0, pick: greedy(list), pickAppend: 5 }, // no penalty: as sent
    { seq, ids: Int32Array.from([2]), logits: 1, promptLength: 0, pick: greedy({ repetitionPenalty: 1.1 }), pickAppend: 2 }, // empty list
    { seq, ids: Int32Array.from([9]), logits: 1, promptLength: 0, pick: greedy({ repetitionPenalty: 1.1, ...list }) }, // none to add
  ];
  const b = packStep(items);
  expect(Array.from(b.items).filter((_, i) => i % 4 === 3)).toEqual([3, 3, 4, 3, 1, 3]);
  expect(Array.from(b.penaltyIds)).toEqual([7, 3, 11, 7, 3, 11, 7, 3, 11, 5, 7, 3, 11, 2, 7, 3, 11]);
  expect(Array.from(b.penaltyCounts)).toEqual([0, 3, 1, 1, 2, 1, 0, 2, 1, 1, 0, 2, 1, 1, 0, 2, 1]);
  expect(Array.from(list.counts)).toEqual([0, 2, 1]); // the request itself is left as it was
});

test('unpackPick gives each pick what its packed row asked for', () => {
  const P = 4;
  const r: NativeStepResult = {
    logits: new Float32Array(0), ids: Int32Array.from([5, -1, 6, 7]), logprobs: Float64Array.from([-0.5, 0, -0.25, -1]),
    nTop: Int32Array.from([0, 0, 0, 2]), topIds: new Int32Array(P * MAX_PICK_TOP), topLogprobs: new Float64Array(P * MAX_PICK_TOP),
  };
  r.topIds.set([7, 2], 3 * MAX_PICK_TOP);
  r.topLogprobs.set([-1, -1.5], 3 * MAX_PICK_TOP);
  const seq = {} as NativeSequence;
  const reqs = [greedy(), greedy({ topLogprobs: 2 }), greedy({ topLogprobs: 0 }), greedy({ topLogprobs: 5 })];
  const batch = packStep(reqs.map((pick) => ({ seq, ids: Int32Array.from([1]), logits: 1 as const, promptLength: 0, pick })));
  reqs[0].topLogprobs = 3; // changed after packing: the row sent decides
  expect(unpackPick(r, 0, batch)).toEqual({ id: 5 });
  expect(unpackPick(r, 1, batch)).toEqual({ id: -1 });
  expect(unpackPick(r, 2, batch)).toEqual({ id: 6, logprob: -0.25 });
  expect(unpackPick(r, 3, batch)).toEqual({ id: 7, logprob: -1, top: [{ id: 7, logprob: -1 }, { id: 2, logprob: -1.5 }] });
});

describe('the addon checks a packed batch', () => {
  const t = useTinyModel('cpu');
  const nativeOf = () => (t.model as unknown as { native: NativeModel }).native;
  const V = 151936;

  /** One decode item with a pick on a fresh sequence (prefilled by a first, valid step). */
  async function ready(): Promise<{ native: NativeModel; seq: NativeSequence; good: () => NativeStepBatch }> {
    const native = nativeOf();
    const seq = native.createSequence();
    await native.step(packStep([{ seq, ids: Int32Array.from([100, 200, 300]), logits: 0, promptLength: 3 }]));
    const good = () => packStep([{ seq, ids: Int32Array.from([400]), logits: 1, promptLength: 0,
      pick: greedy({ ids: Int32Array.from([100, 200]), counts: Int32Array.from([0, 1]), topLogprobs: 2 }) }]);
    return { native, seq, good };
  }

  /** Two fresh sequences, prefilled with `prompt` by one step. */
  async function prefilledPair(native: NativeModel, prompt: Int32Array): Promise<[NativeSequence, NativeSequence]> {
    const a = native.createSequence(), b = native.createSequence();
    await native.step(packStep([a, b].map((seq) => ({ seq, ids: prompt, logits: 0 as const, promptLength: prompt.length }))));
    return [a, b];
  }

  /** The reference for a kept list, sent whole: the prompt's distinct ids (count 0), then each added id counted once
   *  more (or new with count 1), in order. */
  function wholeList(prompt: Int32Array, added: readonly number[]): { ids: Int32Array; counts: Int32Array } {
    const ids: number[] = [], counts: number[] = [];
    const add = (id: number, c: number) => {
      const j = ids.indexOf(id);
      if (j < 0) { ids.push(id); counts.push(c); } else counts[j] += c;
    };
    for (const id of prompt) add(id, 0);
    for (const id of added) add(id, 1);
    return { ids: Int32Array.from(ids), counts: Int32Array.from(counts) };
  }

  test('malformed batches throw, name the field, and change nothing', async () => {
    const { native, seq, good } = await ready();
    const bad: Array<[string, (b: NativeStepBatch) => unknown, RegExp]> = [
      ['no seqs', (b) => ({ ...b, seqs: [] }), /batch.items must hold 4 values/],
      ['short items', (b) => ({ ...b, items: b.items.subarray(0, 3) }), /batch.items must hold 4 values/],
      ['T = 0', (b) => ({ ...b, items: Int32Array.from([0, 1, 0, 2]) }), /needs >= 1 id/],
      ['logits 3', (b) => ({ ...b, items: Int32Array.from([1, 3, 0, -1]) }), /logits 0..2/],
      ['penalty count -2', (b) => ({ ...b, items: Int32Array.from([1, 1, 0, -2]) }), /penalty ids >= -1/],
      ['pick without logits 1', (b) => ({ ...b, items: Int32Array.from([1, 0, 0, 2]) }), /needs logits 1/],
      ['T past ids', (b) => ({ ...b, items: Int32Array.from([2, 1, 0, 2]) }), /sum of T/],
      ['penalty count past the lists', (b) => ({ ...b, items: Int32Array.from([1, 1, 0, 3]) }), /penaltyIds must hold/],
      ['lists of different lengths', (b) => ({ ...b, penaltyCounts: b.penaltyCounts.subarray(0, 1) }), /differ in length/],
      ['a pick row short', (b) => ({ ...b, picks: b.picks.subarray(0, PICK_FIELDS.length - 1) }), new RegExp(`${PICK_FIELDS.length} values per item`)],
      ['ids as Float64Array', (b) => ({ ...b, ids: Float64Array.from(b.ids) }), /batch.ids must be an Int32Array/],
      ['picks as Float32Array', (b) => ({ ...b, picks: Float32Array.from(b.picks) }), /batch.picks must be a Float64Array/],
      ['seqs not sequences', (b) => ({ ...b, seqs: [{}] }), /NativeSequences/],
      ['missing penaltyIds', (b) => ({ ...b, penaltyIds: undefined }), /penaltyIds/],
      ['penalty id = vocab', (b) => ({ ...b, penaltyIds: Int32Array.from([100, V]) }), /pick.ids must be in \[0, vocab\)/],
      ['penalty id < 0', (b) => ({ ...b, penaltyIds: Int32Array.from([-1, 5]) }), /pick.ids must be in \[0, vocab\)/],
      ['repeated penalty id', (b) => ({ ...b, penaltyIds: Int32Array.from([100, 100]) }), /distinct/],
      ['negative count', (b) => ({ ...b, penaltyCounts: Int32Array.from([0, -1]) }), /counts must be >= 0/],
      ['vocabLimit 0', (b) => ({ ...b, picks: Float64Array.from(b.picks, (x, j) => (j === 0 ? 0 : x)) }), /vocabLimit/],
      ['topLogprobs 21', (b) => ({ ...b, picks: Float64Array.from(b.picks, (x, j) => (j === 1 ? 21 : x)) }), /topLogprobs/],
      ['doSample 2', (b) => ({ ...b, picks: Float64Array.from(b.picks, (x, j) => (j === 2 ? 2 : x)) }), /doSample/],
      ['sampled with topP NaN', (b) => ({ ...b, picks: Float64Array.from(b.picks, (x, j) => (j === 2 ? 1 : j === 5 ? NaN : x)) }), /topP/],
    ];
    const len = seq.length;
    for (const [what, mutate, msg] of bad) {
      expect(() => native.step(mutate(good()) as NativeStepBatch)).toThrow(msg);
      expect({ what, length: seq.length }).toEqual({ what, length: len });
    }
    // After all of that, the same sequence steps normally.
    const r = await native.step(good());
    expect(seq.length).toBe(len + 1);
    expect(r.ids).toHaveLength(1);
    expect(r.ids[0]).toBeGreaterThanOrEqual(0);
    expect(r.nTop[0]).toBe(2);
    expect(r.topIds[0]).toBe(r.ids[0]); // greedy: the pick is the most likely id
    seq.dispose();
  });

  test('two picks in one step: the second may list the first one\'s ids (the repeat check is cleared between picks); a repeat inside one pick is refused', async () => {
    const native = nativeOf();
    const a = native.createSequence(), b = native.createSequence();
    const ids = Int32Array.from([10, 20, 30]);
    await native.step(packStep([a, b].map((seq) => ({ seq, ids, logits: 0 as const, promptLength: 3 }))));
    const item = (seq: NativeSequence, pen: number[]): NativeStepItem => ({
      seq, ids: Int32Array.from([40]), logits: 1, promptLength: 0,
      pick: greedy({ ids: Int32Array.from(pen), counts: new Int32Array(pen.length), repetitionPenalty: 1.3 }),
    });
    expect(() => native.step(packStep([item(a, [10, 20]), item(b, [30, 20, 30])]))).toThrow(/distinct/);
    const r = await native.step(packStep([item(a, [10, 20, 30]), item(b, [10, 20, 30])]));
    expect(r.ids).toHaveLength(2);
    expect(r.ids[0]).toBe(r.ids[1]); // the same history and penalties on the same ids: the same pick
    a.dispose();
    b.dispose();
  });

  test('a kept penalty list (hold, then add) gives the picks of the whole lists; a bad add changes nothing', async () => {
    const native = nativeOf();
    const prompt = Int32Array.from({ length: 40 }, (_, i) => (i * 3761) % 5000);
    const [a, b] = await prefilledPair(native, prompt);
    const added: number[] = []; // b's list, whole every step: wholeList(prompt, added)
    const pen = { repetitionPenalty: 0.5, presencePenalty: -1, frequencyPenalty: -0.5, topLogprobs: 3 };
    const whole = () => greedy({ ...pen, ...wholeList(prompt, added) });
    let feed = 7;
    const both = async (ia: NativeStepItem) => {
      const r = await native.step(packStep([ia, { seq: b, ids: Int32Array.of(feed), logits: 1, promptLength: 0, pick: whole() }]));
      expect([r.ids[0], r.logprobs[0], Array.from(r.topIds.subarray(0, 3))]).toEqual([r.ids[1], r.logprobs[1], Array.from(r.topIds.subarray(20, 23))]);
      return r.ids[0];
    };
    const item = (over: Partial<NativeStepItem>): NativeStepItem => ({ seq: a, ids: Int32Array.of(feed), logits: 1, promptLength: 0, pick: whole(), ...over });
    expect(() => native.step(packStep([item({ pickList: 'add', pickAdds: new Int32Array(0) })]))).toThrow(/does not keep/);
    let id = await both(item({ pickList: 'hold' }));
    for (let k = 0; k < 6; k++) {
      // the last pick, an id of the prompt, and (twice) a new one: repeats in one add are applied in order
      const adds = k % 2 ? [id, prompt[k], 4999 - k, 4999 - k] : [id];
      const bad = packStep([item({ pickList: 'add', pickAdds: Int32Array.from([...adds, V]) })]);
      expect(() => native.step(bad)).toThrow(/pick.ids must be in \[0, vocab\)/); // and the kept list is as it was
      const mode = packStep([item({ pickList: 'add', pickAdds: Int32Array.from(adds) })]);
      mode.picks[PICK_FIELDS.indexOf('listMode')] = 3;
      expect(() => native.step(mode)).toThrow(/list mode must be 0, 1 or 2/);
      // a good add, then a bad item in the same batch: nothing is added (everything is checked before any change)
      const two = packStep([item({ pickList: 'add', pickAdds: Int32Array.from(adds) }),
        { seq: b, ids: Int32Array.of(feed), logits: 1, promptLength: 0, pick: greedy({ ...pen, ids: Int32Array.of(5, 5), counts: new Int32Array(2) }) }]);
      expect(() => native.step(two)).toThrow(/distinct/);
      added.push(...adds);
      feed = id;
      id = await both(item({ pickList: 'add', pickAdds: Int32Array.from(adds) }));
    }
    expect(wholeList(prompt, added).counts.some((c) => c > 1)).toBe(true);
    a.dispose();
    b.dispose();
  });

  test('a step reads the kept list as it was when the step was taken, whatever later steps add meanwhile', async () => {
    const native = nativeOf();
    const prompt = Int32Array.from({ length: 30 }, (_, i) => (i * 5023) % 7000);
    const [a, b] = await prefilledPair(native, prompt);
    const pen = { repetitionPenalty: 0.5, presencePenalty: -2, frequencyPenalty: -1, topLogprobs: 2 };
    const list = (extra: number[]) => greedy({ ...pen, ...wholeList(prompt, extra) });
    const item = (seq: NativeSequence, feed: number, over: Partial<NativeStepItem>): NativeStepItem =>
      ({ seq, ids: Int32Array.of(feed), logits: 1, promptLength: 0, pick: list([]), ...over });
    await native.step(packStep([item(a, 1, { pickList: 'hold' }), item(b, 1, {})]));
    const x = prompt[3], y = 6999, z = prompt[3];
    // a long prompt of a third sequence in the first step: it is still running when the second is taken
    const c = native.createSequence();
    const first = native.step(packStep([
      { seq: c, ids: Int32Array.from({ length: 200 }, (_, i) => i + 1), logits: 0, promptLength: 200 },
      item(a, 2, { pickList: 'add', pickAdds: Int32Array.of(x) }), item(b, 2, { pick: list([x]) }),
    ]));
    // Taken while the first runs: its adds change a's kept list in place unless it is copied first (z: a count the
    // first step would read as 2; y: a new entry); the engine then refuses the step (a sequence twice), after the
    // addon took it.
    const second = native.step(packStep([
      item(a, 3, { pickList: 'add', pickAdds: Int32Array.of(z) }), item(a, 3, { pickList: 'add', pickAdds: Int32Array.of(y) }),
    ]));
    await expect(second).rejects.toThrow(/appears twice/);
    const r = await first; // (c asked for no logits: picks 0 and 1 are a's and b's)
    expect([r.ids[0], r.logprobs[0], Array.from(r.topIds.subarray(0, 2))]).toEqual([r.ids[1], r.logprobs[1], Array.from(r.topIds.subarray(20, 22))]);
    // the refused step's adds were taken: the kept list is the prompt + x, y, z
    const r3 = await native.step(packStep([item(a, 4, { pickList: 'add', pickAdds: new Int32Array(0) }), item(b, 4, { pick: list([x, y, z]) })]));
    expect([r3.ids[0], r3.logprobs[0]]).toEqual([r3.ids[1], r3.logprobs[1]]);
    a.dispose();
    b.dispose();
    c.dispose();
  });

  test('a bad pick request is refused at the boundary (E_BAD_ARG) and the other forwards of its step go on', async () => {
    const a = t.model.createSequence(), b = t.model.createSequence();
    await Promise.all([a.forward([1, 2, 3]), b.forward([1, 2, 3])]);
    const cases: Array<[Partial<NativePickRequest>, RegExp]> = [
      [{ ids: Int32Array.from([5, 5]), counts: new Int32Array(2) }, /pick.ids must be distinct \(5 repeats at index 1\)/],
      [{ ids: Int32Array.from([5, V]), counts: new Int32Array(2) }, /pick.ids must be in \[0, 151936\)/],
      [{ ids: Int32Array.from([-3]), counts: new Int32Array(1) }, /pick.ids must be in/],
      [{ ids: Int32Array.from([5]), counts: Int32Array.from([-1]) }, /pick.counts must be >= 0/],
      [{ ids: [1, 2] as unknown as Int32Array }, /pick.ids must be an Int32Array/],
      [{ ids: Int32Array.from([1, 2]), counts: Int32Array.from([0]) }, /pick.counts must be an Int32Array as long as pick.ids/],
      [{ topLogprobs: -1 }, /pick.topLogprobs/],
      [{ topLogprobs: 21 }, /pick.topLogprobs/],
      [{ topLogprobs: '3' as unknown as number }, /pick.topLogprobs/],
    ];
    for (const [over, msg] of cases) {
      const [bad, good] = await Promise.allSettled([
        a.forwardPick([7], greedy({ repetitionPenalty: 1.2, ...over })),
        b.forwardPick([7], greedy({ repetitionPenalty: 1.2, ids: Int32Array.from([5]), counts: Int32Array.from([0]) })),
      ]);
      expect(bad).toMatchObject({ status: 'rejected', reason: { code: 'E_BAD_ARG', message: expect.stringMatching(msg) } });
      expect(good).toMatchObject({ status: 'fulfilled', value: { id: expect.any(Number) } });
    }
    // A vocabLimit beyond the model's rows: ids past vocab_size are dropped, not refused (as before).
    const past = await a.forwardPick([7], greedy({ vocabLimit: V + 10, ids: Int32Array.from([V + 3, 5, V + 3]), counts: new Int32Array(3) }));
    expect(past.id).toBeGreaterThanOrEqual(0);
    a.dispose();
    b.dispose();
  });

  test('a request changed after forwardPick was called is caught by the addon: its step fails, not the process', async () => {
    const seq = t.model.createSequence();
    const req = greedy({ ids: Int32Array.from([5, 6]), counts: new Int32Array(2), repetitionPenalty: 1.2 });
    const p = seq.forwardPick([1, 2, 3], req);
    req.ids[1] = 5; // before the step runs (it starts from setImmediate)
    await expect(p).rejects.toMatchObject({ code: 'E_BACKEND', message: expect.stringMatching(/distinct/) });
    const ok = await seq.forwardPick([1, 2, 3], greedy());
    expect(ok.id).toBeGreaterThanOrEqual(0);
    seq.dispose();
  });
});
