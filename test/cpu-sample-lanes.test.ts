/**
 * cpu/sample_lanes.h (the sampled draw's passes over a whole row: weights and their total, the head, the probe's
 * bounds, the split at a weight bin) against the plain loops of lib/sampling written once more in
 * cpp/cpu/test/sample_lanes_check.cc, sums in the SUM_LANES order: built once with the addon's flags
 * (-O3 -mavx2 -mfma -mf16c: the AVX2 code that runs) and once at -O2 (the scalar form of a build without AVX2).
 */
import { addon } from '../lib/native/binding';
import { runEmu } from './helpers/emu';

const { avx2, fma, f16c } = addon().cpuInfo().features;

for (const flags of [['-O3', '-mavx2', '-mfma', '-mf16c'], []]) {
  const maybe = flags.length && !(avx2 && fma && f16c) ? test.skip : test;
  maybe(`sample_lanes passes == the plain loops, to the bit: specials, thresholds, odd lengths and offsets (${flags.join(' ') || '-O2'})`, () => {
    const out = runEmu(['cpp/cpu/test/sample_lanes_check.cc', 'cpp/core/pick_tables.cc'], { flags });
    const m = /(\d+) cases, (\d+) differ/.exec(out);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBe(3219); // 201 lengths x 4 offsets x 4 mixes less the rows with no usable logit, + 6 Qwen-sized
    expect(Number(m![2])).toBe(0);
  }, 60000);
}
