/** Random-weight checkpoints for tests, made once per test file in a temp dir (never committed). */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { makeRandomCheckpoint, MakeRandomOptions } from '../../lib/model/makeRandom';

export const SHARED = path.resolve(__dirname, '..', '..', '..', 'shared');
/** ../shared/qwen beside the checkout (CI), or shared/qwen inside it: qwen.tiktoken, tokenizer-golden.json, configs. */
export const SHARED_QWEN = [path.join(SHARED, 'qwen'), path.resolve(__dirname, '..', '..', 'shared', 'qwen')].find((d) =>
  fs.existsSync(path.join(d, 'qwen.tiktoken')),
) as string;

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `qwen-node-${prefix}-`));
}

export async function tinyCheckpoint(
  dtype: MakeRandomOptions['dtype'],
  overrides: MakeRandomOptions['overrides'] = {},
  extra: Partial<MakeRandomOptions> = {},
): Promise<string> {
  const out = path.join(tmpDir('ckpt'), 'model');
  await makeRandomCheckpoint({ preset: 'tiny', dtype, seed: 1234, out, tiktoken: null, overrides, shardBytes: 8e6, ...extra });
  return out;
}

export function removeDir(dir: string): void {
  fs.rmSync(path.dirname(dir), { recursive: true, force: true });
}

/** max |a - b| / max |b| over one row: the relative error of a logits vector. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>, off = 0, n = b.length): number {
  let d = 0, m = 0;
  for (let i = 0; i < n; i++) {
    d = Math.max(d, Math.abs(a[off + i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}
