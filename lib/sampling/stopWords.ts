/**
 * Stop words (Qwen StopWordsLogitsProcessor, reference §6.3): when the whole sequence — prompt included — ENDS with
 * one of the stop id sequences, the reference forces eos by setting its logit to 32768. That magic logit overflows
 * fp16 at low temperature (inf/NaN); here generation simply ends, before the next forward ever runs. Entries equal
 * to [eos] are dropped as in the reference (eos ends generation by itself; the base model's [[151643]] is a no-op).
 *
 * It sits between the repetition penalty and the temperature in HF's order but never touches logits, so it is not a
 * link of index.ts's chain: the generation loop (generation/generate.ts) asks it after every new id.
 */
export class StopWords {
  private readonly seqs: readonly (readonly number[])[];
  private readonly tail: number[] = []; // the last `maxLen` ids of the sequence
  private readonly maxLen: number;

  constructor(
    stopWordsIds: readonly (readonly number[])[],
    eosTokenIds: readonly number[],
    contextIds: ArrayLike<number> = [],
  ) {
    this.seqs = stopWordsIds.filter((s) => s.length > 0 && !(s.length === 1 && eosTokenIds.includes(s[0])));
    this.maxLen = Math.max(0, ...this.seqs.map((s) => s.length));
    for (let i = Math.max(0, contextIds.length - this.maxLen); i < contextIds.length; i++)
      this.tail.push(contextIds[i]);
  }

  get empty(): boolean {
    return this.seqs.length === 0;
  }

  push(id: number): void {
    if (this.maxLen === 0) return;
    this.tail.push(id);
    if (this.tail.length > this.maxLen) this.tail.shift();
  }

  /** Length of the longest stop sequence the sequence now ends with; 0 if none. */
  matched(): number {
    let best = 0;
    for (const s of this.seqs) if (s.length > best && this.endsWith(s, s.length)) best = s.length;
    return best;
  }

  /**
   * Length of the longest proper prefix of a stop sequence the sequence now ends with: the generation loop holds
   * those ids back (a multi-token stop word such as "Human:" = [33975, 25] must not leak its first token as text).
   */
  partial(): number {
    let best = 0;
    for (const s of this.seqs) {
      for (let j = Math.min(s.length - 1, this.tail.length); j > best; j--) {
        if (this.endsWith(s, j)) {
          best = j;
          break;
        }
      }
    }
    return best;
  }

  /** Does the sequence end with s[0, j)? */
  private endsWith(s: readonly number[], j: number): boolean {
    const t = this.tail;
    if (j > t.length) return false;
    for (let k = 0; k < j; k++) if (t[t.length - j + k] !== s[k]) return false;
    return true;
  }
}
