/**
 * cpu/sample_lanes.h (the sampled draw's passes over a whole row: weights and their total, the head, the probe's
 * bounds, the split at a weight bin) against the plain loops of lib/sampling written once more in
 * cpp/cpu/test/sample_lanes_check.cc, sums in the SUM_LANES order: built once with the addon's flags
 * (-O3 -mavx2 -mfma -mf16c: the AVX2 code that runs) and once at -O2 (the scalar form of a build without AVX2).
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { addon } from '../lib/native/binding';
import { runEmu } from './helpers/emu';

const { avx2, fma, f16c } = addon().cpuInfo().features;

for (const flags of [['-O3', '-mavx2', '-mfma', '-mf16c'], []]) {
  const maybe = flags.length && !(avx2 && fma && f16c) ? test.skip : test;
  maybe(`sample_lanes passes == the plain loops, to the bit: specials, thresholds, odd lengths and offsets (${flags.join(' ') || '-O2'})`, () => {
    const out = runEmu(['cpp/cpu/test/sample_lanes_check.cc', 'cpp/core/pick_tables.cc'], { flags });
    const m = /(\d+) cases, (\d+) differ/.exec(out);
    expect(m).not.toBeNull();
    // 201 lengths x 4 offsets x 4 mixes, less the rows with no usable logit (how many depends on the C++ library's
    // random distributions), + 3 x 24 x 4 rows at the thresholds + 6 Qwen-sized rows
    expect(Number(m![1])).toBeGreaterThan(3400);
    expect(Number(m![2])).toBe(0);
  }, 60000);
}

// JS rounds every product on its own, so the draw must never fuse a multiply-add. The pragmas of sample.cc and
// sample_lanes.h turn contraction off; a value-level test could not see a fused cubic (the reviewer's search over
// 2.6e9 inputs found no fp32 weight it changes), so the compiled code is read instead, with -ffp-contract=fast forced.
(avx2 && fma && f16c ? test : test.skip)('cpu/sample.cc compiles to no fused multiply-add at the addon\'s flags, even with -ffp-contract=fast', () => {
  const asm = execFileSync(process.env.CXX || 'g++', [
    '-std=c++17', '-O3', '-mavx2', '-mfma', '-mf16c', '-ffp-contract=fast', '-Icpp', '-S', '-o', '-', 'cpp/cpu/sample.cc',
  ], { cwd: path.join(__dirname, '..'), encoding: 'utf8', maxBuffer: 64 << 20 });
  expect(asm).toMatch(/vcvtps2pd/); // the lanes' code is there
  expect(asm.match(/\bvfn?m(add|sub)\w*/g) ?? []).toEqual([]);
}, 60000);
