/**
 * Temperature (HF TemperatureLogitsWarper: logits / T). Dividing 151,936 logits would cost a pass of its own, so the
 * factor is recorded and applied where the weights are computed: w = exp((logit - max) / T). Top-k only depends on the
 * order, which T > 0 does not change; top-p and the draw see the tempered distribution, as in HF.
 * T = 0 never gets here: it means greedy (index.ts).
 */
import type { Candidates } from './candidates';

export function applyTemperature(c: Candidates, temperature: number): void {
  c.invT = 1 / temperature;
}
