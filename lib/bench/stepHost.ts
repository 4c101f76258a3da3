/**
 * The main thread's share of a batched decode step: Sampler.pickRequest -> Sequence.forwardPick (validation, the
 * scheduler's plan, packing the batch for the addon) -> the result unpacked, the promises settled -> accept, for B
 * sequences at once, as generate() runs them (text decoding left out). On the CUDA backend none of it overlaps the
 * device: the next step starts after it. The model is made nearly free (1 layer, hidden 16, vocabulary 2048, so
 * the worker's step is ~0.1 ms and the penalty lists are real) and the figure is the event loop's active time per
 * step (performance.eventLoopUtilization), not wall time. Reported as ms per step and µs per sequence (the row's
 * usPerRow). Then `step gap`: the same sequences chained as generate() runs them (overlapped steps), where most of
 * that work overlaps the next step; what does not is the gap between a step's result and the next launch
 * (StepStats.gapMs, median).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { performance } from 'perf_hooks';
import { loadModel, type Model } from '../model/model';
import { makeRandomCheckpoint } from '../model/makeRandom';
import { type SamplerConfig, createSampler } from '../sampling';
import { type KernelRow, fmtProgress, withRates } from './kernels';
import { chainPicks } from './sweep';
import { median } from './timing';

const VOCAB = 2048;
const PROMPT = 200; // distinct-ish prompt ids: the repetition penalty's list starts near 200 ids and grows

/** Median StepStats.gapMs over `steps` steps of B chained sequences (after `warm` steps), each pick made inside the
 *  backend and queued one step ahead, as generate() does (without text decoding). */
async function chainedGap(model: Model, B: number, cfg: SamplerConfig, warm: number, steps: number): Promise<number> {
  const seqs = Array.from({ length: B }, () => model.createSequence());
  const gaps: number[] = [];
  let n = 0;
  const off = model.onStep((s) => {
    if (s.sequences === B && s.prefillTokens === 0 && n++ >= warm && s.gapMs !== null) gaps.push(s.gapMs);
  });
  try {
    await Promise.all(seqs.map((seq, c) => {
      const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919 + c * 104729 + 13) % VOCAB);
      const sampler = createSampler(cfg, prompt);
      return chainPicks(seq, prompt, warm + steps, () => sampler.pickRequest()!, (p) => sampler.accept([p.id]));
    }));
  } finally {
    off();
    for (const s of seqs) s.dispose();
  }
  return median(gaps);
}

export async function benchStepHost(quick: boolean, log: (s: string) => void): Promise<KernelRow[]> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-node-stephost-'));
  const dir = path.join(tmp, 'model');
  const rows: KernelRow[] = [];
  try {
    await makeRandomCheckpoint({
      preset: 'tiny', dtype: 'fp32', seed: 5, out: dir, tiktoken: null,
      overrides: { hidden_size: 16, num_attention_heads: 1, kv_channels: 16, num_hidden_layers: 1, intermediate_size: 32, vocab_size: VOCAB },
    });
    const model = await loadModel(dir, { device: 'cpu', dtype: 'fp32', threads: 1 });
    try {
      const cases: Array<[string, SamplerConfig]> = [
        ['greedy', { doSample: false, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, tokenizerVocabSize: VOCAB }],
        ['top-p 0.8, T 0.7, rep 1.1', { doSample: true, temperature: 0.7, topK: 0, topP: 0.8, repetitionPenalty: 1.1, tokenizerVocabSize: VOCAB, seed: 1 }],
      ];
      for (const B of quick ? [64] : [1, 16, 64]) {
        for (const [name, cfg] of cases) {
          const steps = quick ? 60 : 200, warm = 20;
          const per: number[] = [];
          for (let rep = 0; rep < (quick ? 2 : 4); rep++) {
            const seqs = Array.from({ length: B }, () => model.createSequence());
            try {
              const prompts = seqs.map((_, c) => Array.from({ length: PROMPT }, (_, i) => (i * 7919 + c * 104729 + 13) % VOCAB));
              const samplers = prompts.map((p) => createSampler(cfg, p));
              let last = await Promise.all(seqs.map((s, j) => s.forwardPick(prompts[j], samplers[j].pickRequest()!)));
              let elu0 = performance.eventLoopUtilization();
              for (let i = 0; i < warm + steps; i++) {
                if (i === warm) elu0 = performance.eventLoopUtilization();
                last = await Promise.all(seqs.map((s, j) => {
                  samplers[j].accept([last[j].id]);
                  return s.forwardPick([last[j].id], samplers[j].pickRequest()!);
                }));
              }
              per.push(performance.eventLoopUtilization(elu0).active / steps);
            } finally {
              for (const s of seqs) s.dispose();
            }
          }
          const ms = median(per);
          const row = withRates({
            kernel: 'step host', shape: `B=${B} · ${name}`, mode: 'js', ms, method: 'event-loop active', reps: per.length,
            bound: 'none', bytes: null, flops: null, spread: (Math.max(...per) - Math.min(...per)) / ms,
            extra: { usPerRow: (ms * 1e3) / B },
          }, null);
          rows.push(row);
          log(fmtProgress(row));
          // The same B sequences chained as generate() runs them (forwardPickNext, overlapped steps): the host work
          // left between a step's result and the next launch (StepStats.gapMs), which the device waits through.
          const gaps: number[] = [];
          for (let rep = 0; rep < (quick ? 2 : 4); rep++) gaps.push(await chainedGap(model, B, cfg, warm, steps));
          const gms = median(gaps);
          const grow = withRates({
            kernel: 'step gap', shape: `B=${B} · ${name} · chained`, mode: 'js', ms: gms, method: 'StepStats.gapMs p50', reps: gaps.length,
            bound: 'none', bytes: null, flops: null, spread: (Math.max(...gaps) - Math.min(...gaps)) / gms,
            extra: { usPerRow: (gms * 1e3) / B },
          }, null);
          rows.push(grow);
          log(fmtProgress(grow));
        }
      }
    } finally {
      await model.dispose();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return rows;
}
