/**
 * Repetition penalty (HF RepetitionPenaltyLogitsProcessor, CTRL-style; reference §6.2): for every DISTINCT id anywhere
 * in the sequence — prompt included — logit / rp when the logit is >= 0, logit * rp when it is < 0. Once per id, not
 * per occurrence (HF gathers then scatters, so duplicates write the same value).
 *
 * The distinct ids are tracked incrementally, so a step costs O(distinct ids), not O(sequence length).
 */
import type { Candidates } from './candidates';

export class RepetitionPenalty {
  private readonly seen = new Set<number>();
  private readonly ids: number[] = [];

  constructor(
    readonly penalty: number,
    contextIds: ArrayLike<number> = [],
  ) {
    this.add(contextIds);
  }

  /** Record ids appended to the sequence. */
  add(ids: ArrayLike<number>): void {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!this.seen.has(id)) {
        this.seen.add(id);
        this.ids.push(id);
      }
    }
  }

  get distinctIds(): readonly number[] {
    return this.ids;
  }

  /** Penalize in place; ids outside the eligible range are left alone (they are never chosen anyway). */
  apply(c: Candidates): void {
    const rp = this.penalty;
    const L = c.logits;
    for (const id of this.ids) {
      if (id < 0 || id >= c.n) continue;
      const x = L[id];
      L[id] = x < 0 ? x * rp : x / rp; // HF: torch.where(score < 0, score * rp, score / rp)
    }
  }
}
