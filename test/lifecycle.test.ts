/** The event loop keeps ticking during native work; dispose and abort release native memory; misuse is a clear error. */
import * as fs from 'fs';
import { loadModel, Model } from '../lib/model/model';
import { removeDir, tinyCheckpoint } from './helpers/fixtures';

let dir: string;
beforeAll(async () => {
  dir = await tinyCheckpoint('bf16', { seq_length: 4096 });
});
afterAll(() => removeDir(dir));

/** Paths of this process's mappings of the checkpoint's shards (/proc/self/maps). */
const mappedShards = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(dir)).length;

test('the event loop keeps ticking during a long forward', async () => {
  const model = await loadModel(dir, { device: 'cpu', threads: 1 });
  const ids = Array.from({ length: 3000 }, (_, i) => (i * 7919) % 151851); // quadratic attention: a long step
  let ticks = 0, worstGap = 0, last = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    worstGap = Math.max(worstGap, now - last);
    last = now;
    ticks++;
  }, 5);
  const t0 = Date.now();
  await model.createSequence().forward(ids);
  const elapsed = Date.now() - t0;
  clearInterval(timer);
  await model.dispose();
  expect(elapsed).toBeGreaterThan(100); // the step really was long...
  expect(ticks).toBeGreaterThan(elapsed / 5 / 4); // ...and the timer kept firing through it
  expect(worstGap).toBeLessThan(100);
});

test('dispose twice is harmless, use after dispose throws E_DISPOSED, mappings are released', async () => {
  const model: Model = await loadModel(dir, { device: 'cpu' });
  expect(mappedShards()).toBeGreaterThan(0);
  const seq = model.createSequence();
  await seq.forward([1, 2, 3]);
  seq.dispose();
  seq.dispose();
  expect(seq.length).toBe(0);
  await expect(seq.forward([4])).rejects.toMatchObject({ code: 'E_DISPOSED' });
  const other = model.createSequence();
  const pending = other.forward([1, 2, 3, 4]);
  await new Promise((r) => setImmediate(r)); // the step starts: in flight while the model is disposed, it completes
  const third = model.createSequence();
  const queued = third.forward([5, 6]).catch((e: unknown) => e); // waits for a step that never comes: rejected
  await model.dispose();
  await expect(pending).resolves.toHaveLength(model.config.vocab_size);
  expect(await queued).toMatchObject({ code: 'E_DISPOSED' });
  expect(other.disposed).toBe(true); // the model disposed its sequences
  await model.dispose();
  expect(() => model.createSequence()).toThrow(/disposed/);
  await expect(model.logits([1])).rejects.toMatchObject({ code: 'E_DISPOSED' });
  expect(mappedShards()).toBe(0);
});

test('aborting a load rejects with E_ABORTED and releases what it mapped', async () => {
  const ac = new AbortController();
  ac.abort(new Error('user gave up'));
  await expect(loadModel(dir, { device: 'cpu', signal: ac.signal })).rejects.toMatchObject({ code: 'E_ABORTED' });
  const ac2 = new AbortController();
  const p = loadModel(dir, { device: 'cpu', signal: ac2.signal, onProgress: () => ac2.abort() });
  await expect(p).rejects.toMatchObject({ code: 'E_ABORTED' });
  expect(mappedShards()).toBe(0);
});

test('progress is reported from 0 to 1', async () => {
  const seen: number[] = [];
  const model = await loadModel(dir, { device: 'cpu', onProgress: (f) => seen.push(f) });
  expect(seen.length).toBeGreaterThan(1);
  expect(seen[seen.length - 1]).toBe(1);
  for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]);
  await model.dispose();
});

test("device 'cuda' without a usable GPU is a clear error; 'auto' falls back to the CPU", async () => {
  const { backends } = await import('../lib/backends');
  const b = backends();
  if (b.cuda.available) return; // covered by the GPU check script on a GPU machine
  await expect(loadModel(dir, { device: 'cuda' })).rejects.toMatchObject({ code: 'E_BACKEND' });
  const m = await loadModel(dir, { device: 'auto' });
  expect(m.device).toBe('cpu');
  await m.dispose();
});
