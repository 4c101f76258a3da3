// GPU check helper (scripts/device-check.sh, part "diag"): prompts of 40 to 600 tokens (all logits; 513 crosses the
// CPU's 512-row pass) on the tiny checkpoint with seq_length 16, one model at a time, each step logged, so a stall
// shows which model and step it is in. test/cuda.test.ts runs the 600-token case with four models at once, which
// timed out once on the H100 host (cpp/cpu/thread_pool.cc has the suspected cause).
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
