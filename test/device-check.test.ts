/**
 * scripts/device-check.sh runs only on a lent GPU machine, 15 minutes a session, so a broken part wastes a session
 * (its gemm and sample parts once ran `env X=1 sweep`, which cannot run a shell function, and timed nothing). Its dry
 * run (QWEN_CHECK_DEVICE=cpu: the CPU backend, a tiny checkpoint) runs the script itself here: the bench part (its
 * repeated prefill), the sweep part, the gemm part's three A/B sweeps with their variables, and the summary table.
 * Built dist/ is required (CI builds it before the tests).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..');

function dryRun(parts: string, work: string) {
  return spawnSync('bash', ['scripts/device-check.sh'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 300000,
    env: { ...process.env, QWEN_CHECK_DEVICE: 'cpu', QWEN_CHECK_PARTS: parts, QWEN_CHECK_WORK: work, OUT: path.join(work, 'out') },
  });
}

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-devcheck-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

test('an unknown part stops the script before anything runs', () => {
  const r = dryRun('sweep sweeps', work);
  expect(r.status).toBe(2);
  expect(r.stdout).toContain("unknown part 'sweeps'");
  expect(r.stdout).not.toContain('=== backends');
});

test('dry run: the bench, sweep and gemm parts time what they say, and the summary puts every run in one table', () => {
  expect(fs.existsSync(path.join(root, 'dist/bench/compare.js'))).toBe(true);
  const r = dryRun('bench sweep gemm summary', work);
  const log = `${r.stdout}\n${r.stderr}`;
  expect(r.status).toBe(0);
  expect(log).not.toContain('sweep failed');
  // each gemm run saw its own variables (the JSON records the QWEN_* environment of its process)
  const runs: Array<[string, Record<string, string>, number[]]> = [
    ['QWEN_CUBLAS_MIN_T=9', { QWEN_CUBLAS_MIN_T: '9' }, [16, 64]],
    ['QWEN_GEMM_SKINNY=1', { QWEN_GEMM_SKINNY: '1' }, [16, 64]],
    ['QWEN_GEMM_SKINNY=1_QWEN_SKINNY_MIN_T=2', { QWEN_GEMM_SKINNY: '1', QWEN_SKINNY_MIN_T: '2' }, [4, 8]],
  ];
  for (const [name, env, batches] of runs) {
    const j = JSON.parse(fs.readFileSync(path.join(work, `ab-gemm-${name}.json`), 'utf8'));
    for (const [k, v] of Object.entries(env)) expect(j.env[k]).toBe(v);
    expect(j.batch.points.map((p: { batchSize: number }) => p.batchSize)).toEqual(batches);
  }
  // the bench: 5 timed prefills of 2048 tokens, the median reported
  const bench = JSON.parse(fs.readFileSync(path.join(work, 'out/bench-cuda.json'), 'utf8'));
  const s = [...bench.prefill.samples].sort((a: number, b: number) => a - b);
  expect([bench.prefill.tokens, s.length, bench.prefill.ms]).toEqual([2048, 5, s[2]]);
  expect(r.stdout).toMatch(/prefill 2048: [\d.]+ ms \(median of [\d., ]+\); decode bs1: [\d.]+ tok\/s/);
  const base = JSON.parse(fs.readFileSync(path.join(work, 'out/sweep-cuda.json'), 'utf8'));
  expect(base.points.map((p: { context: number }) => p.context)).toEqual([32, 2048]);
  expect(base.batch.points.map((p: { batchSize: number }) => p.batchSize)).toEqual([1, 4, 8, 16, 64]);
  // the summary: the baseline first, then each A/B run labelled by its variables
  const table = r.stdout.split('\n').filter((l) => l.startsWith('| '));
  expect(table[0]).toContain('bs 64 at ~200: tok/s');
  expect(table.slice(2).map((l) => l.split('|')[1].trim())).toEqual([ // after the header and the rule
    'sweep-cuda: baseline',
    'ab-gemm-QWEN_CUBLAS_MIN_T=9: QWEN_CUBLAS_MIN_T=9',
    'ab-gemm-QWEN_GEMM_SKINNY=1: QWEN_GEMM_SKINNY=1',
    'ab-gemm-QWEN_GEMM_SKINNY=1_QWEN_SKINNY_MIN_T=2: QWEN_GEMM_SKINNY=1 QWEN_SKINNY_MIN_T=2',
  ]);
}, 300000);
