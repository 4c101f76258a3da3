/**
 * The loaded addon file itself: every qwen:: function it calls is defined inside it. A shared library links with
 * undefined symbols and still loads (Node opens addons lazily), so a source file left out of the build (CMake's glob
 * once missed a new cuda/*.cu) shows up only as a crash on the first call of that op. Needs binutils' nm, which the
 * toolchain that builds the addon brings.
 */
import { execFileSync } from 'child_process';
import * as path from 'path';

test('the addon leaves no qwen:: symbol undefined', () => {
  const file: string = require('node-gyp-build').resolve(path.join(__dirname, '..'));
  const undef = execFileSync('nm', ['-DC', '--undefined-only', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
    .split('\n')
    .filter((l) => l.includes('qwen::'));
  expect(undef).toEqual([]);
});
