/** The only place that loads the addon (build/Release/qwen.node, else prebuilds/<platform>-<arch>/). */
import * as path from 'path';
import { QwenError } from '../errors';
import type { Addon } from './types';

let cached: Addon | undefined;

export function addon(): Addon {
  if (cached) return cached;
  const root = path.join(__dirname, '..', '..');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require('node-gyp-build')(root) as Addon;
  } catch (err) {
    throw new QwenError(
      'E_NO_BINDING',
      `qwen-node: the native addon could not be loaded from ${root} (${(err as Error).message}).\n` +
        'Possible fixes: run `npm rebuild qwen-node` (needs cmake and a C++17 compiler, or python3 + make for the ' +
        'CPU-only fallback), or install on linux-x64 with glibc >= 2.34 where a prebuilt binary ships.',
      { cause: err },
    );
  }
  return cached;
}
