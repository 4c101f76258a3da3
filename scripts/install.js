#!/usr/bin/env node
'use strict';
/*
 * qwen-node's npm "install" script. It says which way it gets the native addon:
 *   1. a binary that node-gyp-build would load (build/Release, then prebuilds/<platform>-<arch>/ by best tag match)
 *      and that really loads here: use it. Same check as `node-gyp-build-test`, but in a child process, so a
 *      binary that fails to load (old glibc, wrong CPU) cannot take this script down with it.
 *   2. else `cmake-js compile`: the CPU backend, plus the CUDA backend where nvcc is found
 *      (QWEN_CUDA=OFF skips CUDA, QWEN_CUDA=ON requires it).
 *   3. else `node-gyp rebuild` (binding.gyp): the CPU-only addon; needs python3, make and a C++17 compiler.
 *   4. else exit 1 with what was tried and how to fix it.
 * node-gyp-build's switches still apply: `npm install --build-from-source` (npm_config_build_from_source=true;
 * or QWEN_BUILD_FROM_SOURCE=1, which npm does not warn about) skips step 1, and QWEN_NODE=1 in the environment skips
 * everything (as node-gyp-build-test does).
 * npm hides the output of a dependency's install script unless it fails; `npm install --foreground-scripts` shows it.
 * The addon does not need this script to have run: node-gyp-build finds prebuilds/ at require time as well.
 */
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.join(__dirname, '..');
const pkg = require(path.join(root, 'package.json'));
const tag = 'qwen-node:';
const say = (msg) => console.log(`${tag} ${msg}`);
const rel = (p) => path.relative(root, p) || p;
const platform = `${process.platform}-${process.arch}`;
const libc = process.platform === 'linux' ? (fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc') : '';
const where = `${platform}${libc ? ` (${libc})` : ''}, Node ${process.versions.node}, Node-API ${process.versions.napi}`;
const lastLine = (s) => String(s || '').trim().split('\n').filter(Boolean).slice(-1)[0] || '';

function truthy(v) {
  return v !== undefined && v !== '' && v !== '0' && v !== 'false';
}

/** Loads a .node in a fresh process; '' if it loads and exports cpuInfo(), else the error. */
function loadError(file) {
  const code =
    'try { const a = require(process.argv[1]);' +
    "  if (typeof a.cpuInfo !== 'function') throw new Error('not a qwen-node addon (no cpuInfo)');" +
    '  a.cpuInfo();' +
    "} catch (e) { process.stderr.write(String(e && e.message).split('\\n')[0] + '\\n'); process.exit(1); }";
  const r = spawnSync(process.execPath, ['-e', code, file], { encoding: 'utf8', timeout: 60000 });
  if (r.error) return r.error.message;
  if (r.status !== 0) return lastLine(r.stderr) || (r.signal ? `killed by ${r.signal}` : `exit ${r.status}`);
  return '';
}

function run(cmd, args, env) {
  console.log(`${tag} $ ${[cmd === process.execPath ? 'node' : cmd, ...args].join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) return r.error.message;
  if (r.status !== 0) return r.signal ? `killed by ${r.signal}` : `exit ${r.status}`;
  return '';
}

function onPath(exe) {
  return (process.env.PATH || '').split(path.delimiter).some((d) => {
    try {
      fs.accessSync(path.join(d || '.', exe), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

const built = () => path.join(root, 'build', 'Release', 'qwen.node');

function tryPrebuilt() {
  let file;
  try {
    file = require('node-gyp-build').path(root);
  } catch {
    const dir = path.join(root, 'prebuilds', platform);
    const have = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
    say(have.length
      ? `no prebuilt binary in prebuilds/${platform}/ matches ${where} (found ${have.join(', ')})`
      : `no prebuilt binary for ${where}`);
    return `none for ${platform}${libc ? ` (${libc})` : ''}`;
  }
  const err = loadError(file);
  const kind = file.includes(`${path.sep}prebuilds${path.sep}`) ? 'prebuilt binary' : 'existing build';
  if (!err) {
    say(`using ${kind} ${rel(file)}`);
    return '';
  }
  say(`the ${kind} ${rel(file)} does not load here: ${err}`);
  return `${rel(file)} does not load: ${err}`;
}

function tryCmake() {
  const cuda = process.env.QWEN_CUDA || 'AUTO';
  say(`building from source with cmake-js (QWEN_CUDA=${cuda}: ${cuda === 'OFF' ? 'CPU backend only' :
    'CPU backend, plus the CUDA backend where nvcc is found; QWEN_CUDA=OFF skips it'})`);
  if (!onPath('cmake')) {
    say('cmake is not on PATH');
    return 'cmake not found on PATH';
  }
  let bin;
  try {
    bin = require.resolve('cmake-js/bin/cmake-js');
  } catch {
    return 'the cmake-js package is missing';
  }
  const err = run(process.execPath, [bin, 'compile']);
  if (err) return err;
  const bad = loadError(built());
  return bad ? `build/Release/qwen.node does not load: ${bad}` : '';
}

function nodeGypCommand() {
  const js = process.env.npm_config_node_gyp; // set by npm for lifecycle scripts (its bundled node-gyp)
  if (js && fs.existsSync(js)) return [process.execPath, [js]];
  try {
    const p = require.resolve('node-gyp/package.json');
    const b = require(p).bin;
    return [process.execPath, [path.join(path.dirname(p), typeof b === 'string' ? b : b['node-gyp'])]];
  } catch {
    return ['node-gyp', []];
  }
}

function tryNodeGyp() {
  const missing = [];
  const env = process.env;
  if (!onPath('python3') && !onPath('python') && !env.npm_config_python && !env.PYTHON) missing.push('python3');
  if (!onPath('make')) missing.push('make');
  if (!env.CXX && !onPath('g++') && !onPath('c++') && !onPath('clang++')) missing.push('a C++ compiler (g++)');
  if (missing.length) {
    say(`node-gyp needs python3, make and a C++17 compiler; not found: ${missing.join(', ')}`);
    return `not found: ${missing.join(', ')}`;
  }
  const [cmd, pre] = nodeGypCommand();
  const args = [...pre, 'rebuild'];
  // Use the running Node's own headers when they are installed, so that node-gyp does not download them.
  const prefix = path.dirname(path.dirname(process.execPath));
  if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) {
    args.push(`--nodedir=${prefix}`);
  }
  if (!process.env.npm_config_jobs && !process.env.JOBS) args.push('--jobs=max');
  const err = run(cmd, args);
  if (err) return err;
  const bad = loadError(built());
  return bad ? `build/Release/qwen.node does not load: ${bad}` : '';
}

function main() {
  if (truthy(process.env[pkg.name.toUpperCase().replace(/-/g, '_')])) {
    say(`${pkg.name.toUpperCase().replace(/-/g, '_')} is set: skipping the native build`);
    return 0;
  }
  const tried = [];
  if (process.env.npm_config_build_from_source === 'true' || truthy(process.env.QWEN_BUILD_FROM_SOURCE)) {
    say('--build-from-source / QWEN_BUILD_FROM_SOURCE: not looking for a prebuilt binary');
  } else {
    const err = tryPrebuilt();
    if (!err) return 0;
    tried.push(`prebuilt binary: ${err}`);
  }

  const cm = tryCmake();
  if (!cm) {
    say(`built ${rel(built())} with cmake-js`);
    return 0;
  }
  tried.push(`cmake-js: ${cm}`);
  say(`cmake-js failed (${cm}); building the CPU-only addon with node-gyp`);

  const ng = tryNodeGyp();
  if (!ng) {
    say(`built ${rel(built())} with node-gyp (CPU backend only)`);
    return 0;
  }
  tried.push(`node-gyp: ${ng}`);

  console.error(
    [
      '',
      `${tag} could not get the native addon for ${where}. Tried:`,
      ...tried.map((t) => `  - ${t}`),
      'Fix one of these, then run `npm rebuild qwen-node` (add --foreground-scripts to see the build):',
      '  - install cmake >= 3.18 and a C++17 compiler with AVX-512/AMX intrinsics (g++ >= 11; 12 tested);',
      '    nvcc, where present, adds the CUDA backend (CUDA 13 tested; QWEN_CUDA=OFF skips it);',
      '  - or install python3, make and a C++17 compiler for the CPU-only node-gyp build;',
      '  - or use linux-x64 with glibc >= 2.34, the libstdc++ of GCC >= 12 and an x86-64-v3 (AVX2) CPU, for which',
      '    the npm package ships a prebuilt binary.',
      '',
    ].join('\n'),
  );
  return 1;
}

process.exitCode = main();
