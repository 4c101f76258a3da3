/**
 * The penalty list of a native pick request (Sampler.pickRequest: NativePickRequest ids / counts), kept as the
 * sequence grows. Rebuilding it from the penalties' Set and Map at every step cost O(distinct ids) of Map lookups per
 * sequence per step (~0.4 ms of the main thread per step of 64 sequences with 200-token prompts on the development
 * machine); now a step copies two Int32Arrays.
 *
 * The list is what the TS processors read, in their order:
 *  - 'all' (the repetition penalty is on): every distinct id of the sequence, prompt first, in order of first
 *    appearance (RepetitionPenalty.distinctIds), each with how often it was generated (0 = prompt only);
 *  - 'generated' (only presence / frequency penalties): the generated ids in order of first generation, with counts
 *    (PresenceFrequencyPenalty's Map order);
 *  - 'none': empty.
 * Ids outside [0, limit) are left out (never eligible: the processors skip them too).
 */
export type PickPenaltyMode = 'all' | 'generated' | 'none';

export class PickPenalties {
  private ids = new Int32Array(64);
  private counts = new Int32Array(64);
  private n = 0;
  private readonly slot = new Map<number, number>(); // id -> index in ids / counts
  /** Every id addGenerated() counted, in order: the list at any time is the prompt's entries, then these added one by
   *  one (count + 1, or a new entry with count 1). The scheduler sends a native sequence that keeps the list only
   *  the ids past what it holds (stepPack kListAdd). */
  private log = new Int32Array(64);
  private logged = 0;

  constructor(
    readonly mode: PickPenaltyMode,
    readonly limit: number,
  ) {}

  /** The prompt's ids (mode 'all' only: the other modes list generated ids alone). */
  addPrompt(ids: ArrayLike<number>): void {
    if (this.mode !== 'all') return;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id >= 0 && id < this.limit && !this.slot.has(id)) this.push(id, 0);
    }
  }

  /** Generated ids, each counted. */
  addGenerated(ids: ArrayLike<number>): void {
    if (this.mode === 'none') return;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(id >= 0 && id < this.limit)) continue;
      const at = this.slot.get(id);
      if (at === undefined) this.push(id, 1);
      else this.counts[at]++;
      if (this.logged === this.log.length) {
        const log = new Int32Array(this.logged * 2);
        log.set(this.log);
        this.log = log;
      }
      this.log[this.logged++] = id;
    }
  }

  /** Generated ids counted so far (the log's length). */
  get events(): number {
    return this.logged;
  }

  /** The generated id counted as event i (-1 outside the log). */
  eventAt(i: number): number {
    return i >= 0 && i < this.logged ? this.log[i] : -1;
  }

  /** The generated ids counted from event `from` to `to` (exclusive). */
  eventsBetween(from: number, to: number): Int32Array {
    return this.log.subarray(from, to);
  }

  /** Copies of the list now: a request keeps its values whatever is added later. */
  snapshot(): { ids: Int32Array; counts: Int32Array } {
    return { ids: this.ids.slice(0, this.n), counts: this.counts.slice(0, this.n) };
  }

  private push(id: number, count: number): void {
    if (this.n === this.ids.length) {
      const ids = new Int32Array(this.n * 2), counts = new Int32Array(this.n * 2);
      ids.set(this.ids);
      counts.set(this.counts);
      this.ids = ids;
      this.counts = counts;
    }
    this.slot.set(id, this.n);
    this.ids[this.n] = id;
    this.counts[this.n++] = count;
  }
}
