/**
 * OpenAI's presence and frequency penalties (API reference "Parameter details"; vLLM applies them the same way):
 *
 *     logit[j] -= frequencyPenalty * count[j] + presencePenalty * (count[j] > 0)
 *
 * where count[j] is how often id j occurs among the tokens GENERATED so far in this request — the prompt does not
 * count (unlike the HF repetition penalty, which covers it). Additive, on the raw (repetition-penalized) logits,
 * before temperature / top-k / top-p; negative values encourage repetition. The counts are kept incrementally, so a
 * step costs O(distinct generated ids).
 */
import type { Candidates } from './candidates';

export class PresenceFrequencyPenalty {
  private readonly counts = new Map<number, number>();

  constructor(
    readonly presence: number,
    readonly frequency: number,
  ) {}

  /** Record generated ids. */
  add(ids: ArrayLike<number>): void {
    for (let i = 0; i < ids.length; i++) this.counts.set(ids[i], (this.counts.get(ids[i]) ?? 0) + 1);
  }

  /** How often id occurs among the generated ids. */
  count(id: number): number {
    return this.counts.get(id) ?? 0;
  }

  /** Penalize in place; ids outside the eligible range are left alone (they are never chosen anyway). */
  apply(c: Candidates): void {
    const L = c.logits;
    const { presence, frequency } = this;
    for (const [id, n] of this.counts) {
      if (id < 0 || id >= c.n) continue;
      L[id] -= frequency * n + presence; // every id in the map has n >= 1
    }
  }
}
