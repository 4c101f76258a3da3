/**
 * cpu/argmax.h's argmax_first (the first index of a row's largest logit, in lanes the compiler vectorizes) against
 * the plain loop it replaced in the CPU pick and the sampled draw: cpp/cpu/test/argmax_check.cc, built once with the
 * addon's flags (-O3 -mavx2 -mfma -mf16c: the vectorized code that runs) and once at -O2 without them.
 */
import { addon } from '../lib/native/binding';
import { runEmu } from './helpers/emu';

const { avx2, fma, f16c } = addon().cpuInfo().features;

for (const flags of [['-O3', '-mavx2', '-mfma', '-mf16c'], []]) {
  const maybe = flags.length && !(avx2 && fma && f16c) ? test.skip : test;
  maybe(`argmax_first == the plain loop: ties, NaN, +-Infinity, +-0, odd lengths and offsets (${flags.join(' ') || '-O2'})`, () => {
    const out = runEmu(['cpp/cpu/test/argmax_check.cc'], { flags });
    const m = /(\d+) cases, (\d+) differ/.exec(out);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBe(4841); // 201 lengths x 4 offsets x 6 mixes + 7 Qwen-sized rows x 2 spans + 3 -0/+0 rows
    expect(Number(m![2])).toBe(0);
  }, 60000);
}
