/**
 * The packed form of a batched step (NativeStepBatch) and back. A step of 64 sequences read as 64 objects of ~15
 * fields through N-API took ~0.4 ms of the main thread on the development machine, and 64 result objects made in
 * C++ ~0.1 ms more: time in which the device (CUDA) waits for the next step. JS writes and reads typed arrays fast.
 */
import type { NativePick, NativePickRequest, NativeSequence, NativeStepBatch, NativeStepResult } from './types';

/** One sequence's part of a batched step (cpp/core/engine.h StepItem), before packing. */
export interface NativeStepItem {
  seq: NativeSequence;
  ids: Int32Array;
  /** Logits rows wanted: 0 none, 1 the last new position, 2 every new position. */
  logits: 0 | 1 | 2;
  /** > 0: freeze the NTK alpha as for a prompt of this length (a prompt fed in chunks). */
  promptLength: number;
  /** With logits 1: pick the last position's next id in the backend instead of returning its logits row. */
  pick?: NativePickRequest;
  /** An id to add to pick's penalty list as generated (count + 1, or a new entry with count 1), when a penalty is
   *  on: the request was made before that id was known (Scheduler.submitPickNext). */
  pickAppend?: number;
  /** How the pick's penalty list travels (cpp/addon/convert.h PickListMode; default 'given'): 'given' sends
   *  pick.ids / counts; 'hold' sends them and the sequence keeps the list; 'add' sends only `pickAdds` (ids each
   *  counted once more, or new with count 1), added to the list the sequence keeps. pickAppend applies in all three. */
  pickList?: 'given' | 'hold' | 'add';
  pickAdds?: Int32Array;
}

/** PickListMode codes (cpp/addon/convert.h). */
export const PICK_LIST_MODES = { given: 0, add: 1, hold: 2 } as const;

/** Whether a pickAppend of `id` goes into q's penalty list: an id the pick can produce, and a penalty on (otherwise
 *  the list changes nothing). */
export const appendsTo = (q: NativePickRequest, id: number): boolean =>
  id >= 0 && id < q.vocabLimit && (q.repetitionPenalty !== 1 || q.presencePenalty !== 0 || q.frequencyPenalty !== 0);

/** A pick's row in NativeStepBatch.picks, in this order (cpp/addon/convert.h PickField). */
export const PICK_FIELDS = [
  'vocabLimit', 'topLogprobs', 'doSample', 'temperature', 'topK', 'topP', 'u',
  'repetitionPenalty', 'presencePenalty', 'frequencyPenalty', 'listMode',
] as const;
const NF = PICK_FIELDS.length;
/** Top list entries per pick in NativeStepResult (cpp/core/backend.h kMaxPickTop). */
export const MAX_PICK_TOP = 20;

export function packStep(items: readonly NativeStepItem[]): NativeStepBatch {
  let nIds = 0, nPicks = 0, nPen = 0;
  for (const it of items) {
    nIds += it.ids.length;
    if (it.pick) {
      nPicks++;
      nPen += (it.pickList === 'add' ? it.pickAdds!.length : it.pick.ids.length) + 1; // + room for pickAppend
    }
  }
  const seqs = new Array<NativeSequence>(items.length);
  const head = new Int32Array(items.length * 4);
  const ids = new Int32Array(nIds);
  const picks = new Float64Array(nPicks * NF);
  const penaltyIds = new Int32Array(nPen);
  const penaltyCounts = new Int32Array(nPen);
  let at = 0, p = 0, pen = 0;
  for (let i = 0; i < items.length; i++) {
    const it = items[i];
    seqs[i] = it.seq;
    head[i * 4] = it.ids.length;
    head[i * 4 + 1] = it.logits;
    head[i * 4 + 2] = it.promptLength;
    ids.set(it.ids, at);
    at += it.ids.length;
    const q = it.pick;
    if (!q) {
      head[i * 4 + 3] = -1;
      continue;
    }
    const o = p * NF;
    picks[o] = q.vocabLimit;
    picks[o + 1] = q.topLogprobs ?? -1;
    picks[o + 2] = q.doSample ? 1 : 0;
    if (q.doSample) {
      // NaN where a field is missing: the addon rejects it as the object form did (lib/model checkPick first)
      picks[o + 3] = q.temperature ?? NaN;
      picks[o + 4] = q.topK ?? NaN;
      picks[o + 5] = q.topP ?? NaN;
      picks[o + 6] = q.u ?? NaN;
    } else {
      picks[o + 3] = 1;
      picks[o + 4] = 0;
      picks[o + 5] = 1;
      picks[o + 6] = 0;
    }
    picks[o + 7] = q.repetitionPenalty;
    picks[o + 8] = q.presencePenalty;
    picks[o + 9] = q.frequencyPenalty;
    const mode = it.pickList ?? 'given';
    picks[o + 10] = PICK_LIST_MODES[mode];
    const add = it.pickAppend ?? -1;
    const adding = appendsTo(q, add);
    let n: number;
    if (mode === 'add') {
      // entries to add, one count each; the append is one more
      const a = it.pickAdds!;
      penaltyIds.set(a, pen);
      penaltyCounts.fill(1, pen, pen + a.length);
      n = a.length;
      if (adding) {
        penaltyIds[pen + n] = add;
        penaltyCounts[pen + n++] = 1;
      }
    } else {
      if (q.counts.length !== q.ids.length) throw new RangeError('pick.ids and pick.counts differ in length');
      penaltyIds.set(q.ids, pen);
      penaltyCounts.set(q.counts, pen);
      n = q.ids.length;
      if (adding) {
        let j = 0;
        while (j < n && penaltyIds[pen + j] !== add) j++;
        if (j === n) penaltyIds[pen + n++] = add;
        penaltyCounts[pen + j]++;
      }
    }
    head[i * 4 + 3] = n;
    pen += n;
    p++;
  }
  // Room left for appends that were not made: the addon reads the lists by the items' counts, in order.
  return { seqs, items: head, ids, picks, penaltyIds: penaltyIds.subarray(0, pen), penaltyCounts: penaltyCounts.subarray(0, pen) };
}

/** The k-th pick of a step's result, as its request asked for it: logprob when topLogprobs >= 0, top when > 0. Read
 *  from the batch that was sent (its row k), not from the request object, which its caller could have changed since. */
export function unpackPick(r: NativeStepResult, k: number, batch: NativeStepBatch): NativePick {
  const id = r.ids[k];
  const t = batch.picks[k * NF + 1]; // topLogprobs, -1: none
  if (id < 0 || t < 0) return { id };
  if (t === 0) return { id, logprob: r.logprobs[k] };
  const n = r.nTop[k];
  const top = new Array<{ id: number; logprob: number }>(n);
  for (let j = 0; j < n; j++) top[j] = { id: r.topIds[k * MAX_PICK_TOP + j], logprob: r.topLogprobs[k * MAX_PICK_TOP + j] };
  return { id, logprob: r.logprobs[k], top };
}
