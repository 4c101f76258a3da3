// GPU check helper (scripts/device-check.sh, part "diag"): a 600-token prompt (two engine passes: 512 + 88 rows, all
// logits) on the tiny checkpoint with seq_length 16, one CUDA model at a time, each step logged, so a stall shows
// which model and step it is in. test/cuda.test.ts runs the same case with four models at once.
const { loadModel } = require('../dist/model/model.js');
const { makeRandomCheckpoint } = require('../dist/model/makeRandom.js');
(async () => {
  const out = '/tmp/qwen-diag600/model';
  await makeRandomCheckpoint({ preset: 'tiny', dtype: 'bf16', seed: 1234, out, tiktoken: null, overrides: { seq_length: 16 }, shardBytes: 8e6 });
  const ids = Array.from({ length: 600 }, (_, i) => (i * 7919 + 13) % 151851);
  for (const [device, dtype] of [['cuda', 'bf16'], ['cuda', 'fp32'], ['cpu', 'auto']]) {
    const t0 = Date.now();
    const m = await loadModel(out, { device, dtype });
    m.onStep((s) => console.log(`  ${device} ${dtype} step: ${JSON.stringify(s).slice(0, 160)}`));
    console.log(`${device} ${dtype}: loaded in ${Date.now() - t0} ms`);
    for (const n of [40, 300, 513, 600]) {
      const t = Date.now();
      const l = await m.logits(ids.slice(0, n));
      let finite = 0;
      for (let i = 0; i < l.length; i++) if (Number.isFinite(l[i])) finite++;
      console.log(`${device} ${dtype}: logits of ${n} tokens in ${Date.now() - t} ms, ${finite}/${l.length} finite`);
    }
    await m.dispose();
  }
})().catch((e) => { console.log('ERR', e.stack); process.exit(1); });
