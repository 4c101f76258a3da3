#!/usr/bin/env bash
# End-to-end test of what a user gets from the npm tarball:
#   1. `npm run prebuildify` (in a scratch copy of the repo, so build/ and prebuilds/ of this checkout are untouched)
#      -> prebuilds/linux-x64/qwen-node.glibc.node that needs only libc/libstdc++/libm/libgcc_s (+ libpthread/libdl/librt)
#   2. `npm pack` -> the tarball holds dist/, bin/, prebuilds/, the sources; not test/, node_modules/, build/
#   3. a fresh project installs the tarball with NO compiler, make, cmake or python on PATH, a scratch npm cache and
#      HOME; the install script must say it uses the prebuilt binary; `npx qwen-node doctor` and
#      `npx qwen-node demo --max-new-tokens 8 --device cpu` must work there
#   4. the same with `npm install --ignore-scripts` (node-gyp-build finds prebuilds/ at require time)
#   5. a tarball without prebuilds/: with no compiler the install fails with exit != 0 and a message saying what to
#      install; with cmake it builds from source with cmake-js; without cmake it builds the CPU-only addon with node-gyp
# Environment: QWEN_CUDA (default OFF) is the variant of the prebuild (AUTO/ON = with the CUDA backend; minutes);
# QWEN_INSTALL_TEST_FALLBACK=0 skips step 5's two source builds (the no-compiler failure is always checked);
# QWEN_INSTALL_TEST_KEEP=1 keeps the scratch directory (it is always kept on failure).
# Needs: this checkout's node_modules (npm ci), network access to the npm registry (dependencies of the tarball).
# Prints one line per check and ends with "prebuilt-install test: PASS ..." (exit 0) or "... FAIL ..." (exit 1).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREBUILD_CUDA=${QWEN_CUDA:-OFF}
FALLBACK=${QWEN_INSTALL_TEST_FALLBACK:-1}
W=$(mktemp -d "${TMPDIR:-/tmp}/qwen-node-install-test.XXXXXX")
T0=$SECONDS
checks=0

pass() { checks=$((checks + 1)); echo "  ok   $*"; }
fail() {
  echo "  FAIL $1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then echo "  ---- last lines of $2:"; tail -n 40 "$2" | sed 's/^/  | /'; fi
  echo "prebuilt-install test: FAIL after $checks checks, $((SECONDS - T0)) s (scratch dir kept: $W)"
  exit 1
}
step() { echo "== $* ($((SECONDS - T0)) s)"; }
# grep -q on a log, pass/fail with a message
expect() { # expect LOG REGEX MESSAGE
  if grep -Eq -- "$2" "$1"; then pass "$3"; else fail "$3 (no /$2/ in $(basename "$1"))" "$1"; fi
}
expect_not() {
  if grep -Eq -- "$2" "$1"; then fail "$3 (found /$2/ in $(basename "$1"))" "$1"; else pass "$3"; fi
}

[ -x "$ROOT/node_modules/.bin/prebuildify" ] && [ -x "$ROOT/node_modules/.bin/cmake-js" ] \
  || fail "this checkout has no node_modules with prebuildify and cmake-js: run npm ci first"

# ---------------------------------------------------------------------------------------------------------------
step "1. prebuild (QWEN_CUDA=$PREBUILD_CUDA) in a scratch copy: $W/src"
mkdir -p "$W/src"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$W/src") || fail "copy the sources"
else
  tar -C "$ROOT" --exclude=./node_modules --exclude=./build --exclude=./dist --exclude='./prebuilds/*-*' -cf - . \
    | tar -C "$W/src" -xf - || fail "copy the sources"
fi
ln -s "$ROOT/node_modules" "$W/src/node_modules"
rm -rf "$W/src/prebuilds/"*-*   # never pack a binary that this run did not build
t=$SECONDS
(cd "$W/src" && QWEN_CUDA=$PREBUILD_CUDA npm run prebuildify) >"$W/prebuildify.log" 2>&1 \
  || fail "npm run prebuildify" "$W/prebuildify.log"
PB="$W/src/prebuilds/linux-x64/qwen-node.glibc.node"
[ -f "$PB" ] || fail "prebuilds/linux-x64/qwen-node.glibc.node exists" "$W/prebuildify.log"
pass "npm run prebuildify -> prebuilds/linux-x64/qwen-node.glibc.node, $(du -k "$PB" | cut -f1) KB, $((SECONDS - t)) s"
if grep -qa '\.nv_fatbin' "$PB"; then cuda_in=yes; else cuda_in=no; fi
if [ "$PREBUILD_CUDA" = OFF ]; then
  [ $cuda_in = no ] || fail "QWEN_CUDA=OFF: no CUDA code in the prebuild" "$W/prebuildify.log"
  pass "CPU-only prebuild (no .nv_fatbin section)"
else
  expect "$W/prebuildify.log" "CUDA backend ON" "cmake: CUDA backend ON"
  [ $cuda_in = yes ] || fail "CUDA kernels (.nv_fatbin) in the prebuild" "$W/prebuildify.log"
  pass "CUDA kernels (.nv_fatbin) in the prebuild"
fi
ldd "$PB" >"$W/ldd.txt" 2>&1 || fail "ldd on the prebuild" "$W/ldd.txt"
bad=$(awk '/=>|ld-linux|vdso/ {print $1}' "$W/ldd.txt" \
  | grep -Ev '^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|ld-linux-x86-64\.so\.2|lib(c|m|stdc\+\+|gcc_s|pthread|dl|rt)\.so\.[0-9]+)$' || true)
[ -z "$bad" ] && ! grep -q "not found" "$W/ldd.txt" || fail "ldd shows only libc/libstdc++/libm/libgcc_s/...: extra: $bad" "$W/ldd.txt"
pass "ldd: $(awk '/=>/ {print $1}' "$W/ldd.txt" | tr '\n' ' ')"
need=$( (objdump -T "$PB" 2>/dev/null || true) | grep -Eo 'GLIBC_[0-9.]+|GLIBCXX_[0-9.]+' | sort -uV \
  | awk -F_ '{v[$1]=$2} END {printf "glibc %s, libstdc++ GLIBCXX_%s", v["GLIBC"], v["GLIBCXX"]}')
echo "       needs $need"

# ---------------------------------------------------------------------------------------------------------------
step "2. npm pack"
t=$SECONDS
(cd "$W/src" && npm pack --pack-destination "$W") >"$W/pack.log" 2>&1 || fail "npm pack" "$W/pack.log"
TGZ=$(ls "$W"/qwen-node-*.tgz 2>/dev/null | head -n1)
[ -n "$TGZ" ] || fail "npm pack wrote a tarball" "$W/pack.log"
pass "npm pack -> $(basename "$TGZ"), $(du -k "$TGZ" | cut -f1) KB, $((SECONDS - t)) s"
tar -tzf "$TGZ" | sort >"$W/contents.txt"
for f in package/package.json package/README.md package/dist/index.js package/dist/index.d.ts package/dist/cli.js \
  package/bin/qwen-node.js package/prebuilds/linux-x64/qwen-node.glibc.node package/scripts/install.js \
  package/scripts/prebuildify-cmake.sh package/CMakeLists.txt package/binding.gyp package/lib/index.ts; do
  grep -qx "$f" "$W/contents.txt" || fail "tarball contains $f" "$W/contents.txt"
done
grep -q '^package/cpp/.*\.cc$' "$W/contents.txt" && grep -q '^package/cuda/.*\.cu$' "$W/contents.txt" \
  || fail "tarball contains cpp/ and cuda/ sources" "$W/contents.txt"
pass "tarball has dist/, bin/, prebuilds/linux-x64/, scripts/install.js, lib/, cpp/, cuda/, CMakeLists.txt, binding.gyp"
if grep -Eq '^package/(test|node_modules|build|\.ci|bench)/|^package/prebuilds/\.|test-prebuilt-install|device-check' \
  "$W/contents.txt"; then
  fail "tarball has no test/, node_modules/, build/, .ci/, CI scripts" "$W/contents.txt"
fi
pass "tarball has no test/, node_modules/, build/, .ci/ ($(wc -l <"$W/contents.txt") files)"

# ---------------------------------------------------------------------------------------------------------------
step "3. install into a fresh project with no compiler, make, cmake or python on PATH"
# A bin dir with node/npm/npx, a shell and a few coreutils only. npm adds node_modules/.bin and its node-gyp-bin.
mkdir -p "$W/bin" "$W/home" "$W/npm-cache" "$W/qwen-cache"
for e in node npm npx sh bash env cat ls mkdir rm cp mv ln grep sed head tail dirname basename uname true false; do
  p=$(command -v "$e") && ln -sf "$p" "$W/bin/$e"
done
for e in g++ gcc cc c++ clang make cmake ninja python python3 nvcc; do
  if PATH="$W/bin" command -v "$e" >/dev/null 2>&1; then fail "$e must not be on the restricted PATH"; fi
done
pass "restricted PATH: $(ls "$W/bin" | tr '\n' ' ')"
# A clean environment: nothing from this shell's npm (npm_config_*), a scratch HOME (no ~/.npmrc), cache and model cache.
passenv=()
for v in NODE_EXTRA_CA_CERTS SSL_CERT_FILE HTTPS_PROXY HTTP_PROXY NO_PROXY https_proxy http_proxy no_proxy CI TERM LANG; do
  [ -n "${!v:-}" ] && passenv+=("$v=${!v}")
done
NPMFLAGS=(--no-audit --no-fund --prefer-offline --loglevel=warn)
# run_in DIR PATH LOG cmd...  (clean env; exit status of cmd)
run_in() {
  local dir=$1 path=$2 log=$3; shift 3
  (cd "$dir" && env -i "${passenv[@]}" PATH="$path" HOME="$W/home" TMPDIR="$W/tmp" npm_config_cache="$W/npm-cache" \
    npm_config_update_notifier=false QWEN_NODE_CACHE="$W/qwen-cache" QWEN_CUDA=OFF "$@") >"$log" 2>&1
}
mkdir -p "$W/tmp"
new_app() { mkdir -p "$1" && printf '{ "name": "%s", "version": "1.0.0", "private": true }\n' "$(basename "$1")" >"$1/package.json"; }

new_app "$W/app"
t=$SECONDS
run_in "$W/app" "$W/bin" "$W/install.log" npm install "$TGZ" --foreground-scripts "${NPMFLAGS[@]}" \
  || fail "npm install of the tarball (restricted PATH)" "$W/install.log"
pass "npm install $(basename "$TGZ") --foreground-scripts: $((SECONDS - t)) s (dependencies from the registry, cold cache)"
expect "$W/install.log" "qwen-node: using prebuilt binary prebuilds/linux-x64/qwen-node\.glibc\.node" \
  "install script says: using prebuilt binary prebuilds/linux-x64/qwen-node.glibc.node"
[ ! -e "$W/app/node_modules/qwen-node/build" ] || fail "nothing was compiled (no node_modules/qwen-node/build)" "$W/install.log"
pass "nothing was compiled (no node_modules/qwen-node/build)"
grep -i "allow-\?scripts\|install script" "$W/install.log" | sed 's/^/       npm: /' | head -n 3

t=$SECONDS
run_in "$W/app" "$W/bin" "$W/doctor.log" npx --no qwen-node doctor || fail "npx qwen-node doctor" "$W/doctor.log"
pass "npx qwen-node doctor: $((SECONDS - t)) s"
node -e '
const s = require("fs").readFileSync(process.argv[1], "utf8");
const j = JSON.parse(s.slice(s.indexOf("{"), s.lastIndexOf("}") + 1));
if (!j.cpu || !j.cpu.isa || typeof j.cuda.compiled !== "boolean") throw new Error("no cpu.isa / cuda.compiled");
if (!/device .auto. uses: (cpu|cuda)/.test(s)) throw new Error("no \"device auto uses\" line");
console.log(`       doctor: cpu isa ${j.cpu.isa}, ${j.cpu.threads} threads; cuda compiled ${j.cuda.compiled}, available ${j.cuda.available}; auto = ${j.auto}`);
' "$W/doctor.log" || fail "doctor prints the backends report" "$W/doctor.log"
pass "doctor output parses (cpu.isa, cuda.compiled, auto)"
run_in "$W/app" "$W/bin" "$W/which.log" node -e \
  'console.log(require("node-gyp-build").path(require("path").dirname(require.resolve("qwen-node/package.json"))))' \
  || fail "node-gyp-build resolves the addon" "$W/which.log"
expect "$W/which.log" "node_modules/qwen-node/prebuilds/linux-x64/qwen-node\.glibc\.node$" "the addon loaded is the prebuild"

t=$SECONDS
run_in "$W/app" "$W/bin" "$W/demo.log" npx --no qwen-node demo --max-new-tokens 8 --device cpu \
  || fail "npx qwen-node demo --max-new-tokens 8 --device cpu" "$W/demo.log"
pass "npx qwen-node demo --max-new-tokens 8 --device cpu: $((SECONDS - t)) s"
expect "$W/demo.log" "^qwen-node demo: a tiny Qwen-architecture model" "demo prints its banner"
expect "$W/demo.log" "on cpu\." "demo runs on the cpu"
expect "$W/demo.log" "^[1-8] tokens in [0-9.]+ s: [0-9.]+ tok/s" "demo generated 1..8 tokens"
[ -f "$W/qwen-cache/random-tiny-bf16-seed1/config.json" ] || fail "demo wrote its model into QWEN_NODE_CACHE" "$W/demo.log"
pass "demo model in QWEN_NODE_CACHE (nothing written to the real HOME)"
sed -n '/tokens in/p' "$W/demo.log" | sed 's/^/       demo: /'

# ---------------------------------------------------------------------------------------------------------------
step "4. install with --ignore-scripts (the install script never runs)"
new_app "$W/app-noscripts"
t=$SECONDS
run_in "$W/app-noscripts" "$W/bin" "$W/install-noscripts.log" npm install "$TGZ" --ignore-scripts "${NPMFLAGS[@]}" \
  || fail "npm install --ignore-scripts" "$W/install-noscripts.log"
pass "npm install --ignore-scripts: $((SECONDS - t)) s (warm cache)"
expect_not "$W/install-noscripts.log" "qwen-node: " "the install script did not run"
run_in "$W/app-noscripts" "$W/bin" "$W/demo-noscripts.log" npx --no qwen-node demo --max-new-tokens 8 --device cpu \
  || fail "demo after --ignore-scripts" "$W/demo-noscripts.log"
expect "$W/demo-noscripts.log" "^[1-8] tokens in" "demo works without the install script (prebuild found at require time)"

# ---------------------------------------------------------------------------------------------------------------
step "5. no matching prebuild: fall back to building from source"
mkdir -p "$W/noprebuild"
tar -xzf "$TGZ" -C "$W/noprebuild" && rm -rf "$W/noprebuild/package/prebuilds/linux-x64" \
  && tar -czf "$W/qwen-node-noprebuild.tgz" -C "$W/noprebuild" package || fail "make a tarball without prebuilds"

new_app "$W/app-nocc"
t=$SECONDS
if run_in "$W/app-nocc" "$W/bin" "$W/install-nocc.log" npm install "$W/qwen-node-noprebuild.tgz" --foreground-scripts \
  "${NPMFLAGS[@]}"; then
  fail "with no prebuild and no compiler the install must fail" "$W/install-nocc.log"
fi
pass "no prebuild, no compiler: npm install exits non-zero ($((SECONDS - t)) s)"
expect "$W/install-nocc.log" "qwen-node: no prebuilt binary for linux-x64" "says: no prebuilt binary for linux-x64"
expect "$W/install-nocc.log" "building from source with cmake-js" "says: building from source with cmake-js"
expect "$W/install-nocc.log" "cmake-js failed \(cmake not found on PATH\); building the CPU-only addon with node-gyp" \
  "says: cmake-js failed (cmake not found on PATH); building the CPU-only addon with node-gyp"
expect "$W/install-nocc.log" "node-gyp needs python3, make and a C\+\+17 compiler; not found: python3, make" \
  "says: node-gyp needs python3, make and a C++17 compiler; not found: ..."
expect "$W/install-nocc.log" "could not get the native addon for linux-x64" "says: could not get the native addon"
expect "$W/install-nocc.log" "install cmake >= 3.18 and a C\+\+17 compiler" "says what to install"

# A prebuild that matches but does not load (here: not an ELF file; in real life an older glibc/libstdc++)
mkdir -p "$W/badprebuild" && tar -xzf "$TGZ" -C "$W/badprebuild" \
  && echo "not an ELF file" >"$W/badprebuild/package/prebuilds/linux-x64/qwen-node.glibc.node" \
  && tar -czf "$W/qwen-node-badprebuild.tgz" -C "$W/badprebuild" package || fail "make a tarball with a broken prebuild"
new_app "$W/app-bad"
if run_in "$W/app-bad" "$W/bin" "$W/install-bad.log" npm install "$W/qwen-node-badprebuild.tgz" --foreground-scripts \
  "${NPMFLAGS[@]}"; then
  fail "with a prebuild that does not load and no compiler the install must fail" "$W/install-bad.log"
fi
pass "prebuild that does not load, no compiler: npm install exits non-zero"
expect "$W/install-bad.log" "qwen-node: the prebuilt binary prebuilds/linux-x64/qwen-node\.glibc\.node does not load here: .*file too short" \
  "says: the prebuilt binary ... does not load here: <reason>"
expect "$W/install-bad.log" "qwen-node: building from source with cmake-js" "then tries to build from source"

if [ "$FALLBACK" = 0 ]; then
  echo "       (QWEN_INSTALL_TEST_FALLBACK=0: source builds with cmake-js and node-gyp skipped)"
else
  # cmake-js: this shell's full PATH (cmake, g++; QWEN_CUDA=OFF for speed)
  new_app "$W/app-cmake"
  t=$SECONDS
  run_in "$W/app-cmake" "$PATH" "$W/install-cmake.log" npm install "$W/qwen-node-noprebuild.tgz" --foreground-scripts \
    "${NPMFLAGS[@]}" || fail "no prebuild, cmake present: install builds with cmake-js" "$W/install-cmake.log"
  pass "no prebuild, cmake present: npm install builds from source: $((SECONDS - t)) s"
  expect "$W/install-cmake.log" "qwen-node: no prebuilt binary for linux-x64" "says: no prebuilt binary"
  expect "$W/install-cmake.log" "qwen-node: building from source with cmake-js" "says: building from source with cmake-js"
  expect "$W/install-cmake.log" "qwen-node: built build/Release/qwen\.node with cmake-js" "says: built with cmake-js"
  run_in "$W/app-cmake" "$W/bin" "$W/demo-cmake.log" npx --no qwen-node demo --max-new-tokens 8 --device cpu \
    || fail "demo on the cmake-js build" "$W/demo-cmake.log"
  expect "$W/demo-cmake.log" "^[1-8] tokens in" "demo works on the cmake-js build"

  # node-gyp: every executable of this PATH except cmake
  mkdir -p "$W/bin-nocmake"
  IFS=: read -ra dirs <<<"$PATH"
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
      b=$(basename "$f")
      case "$b" in cmake | cmake3 | ctest | cpack | ccmake) continue ;; esac
      [ -x "$f" ] && [ ! -e "$W/bin-nocmake/$b" ] && ln -s "$f" "$W/bin-nocmake/$b"
    done
  done
  if PATH="$W/bin-nocmake" command -v cmake >/dev/null 2>&1; then fail "cmake must not be on the node-gyp PATH"; fi
  new_app "$W/app-gyp"
  t=$SECONDS
  run_in "$W/app-gyp" "$W/bin-nocmake" "$W/install-gyp.log" npm install "$W/qwen-node-noprebuild.tgz" \
    --foreground-scripts "${NPMFLAGS[@]}" || fail "no prebuild, no cmake: install builds with node-gyp" "$W/install-gyp.log"
  pass "no prebuild, no cmake (g++, make, python3 present): npm install builds from source: $((SECONDS - t)) s"
  expect "$W/install-gyp.log" "cmake-js failed \(cmake not found on PATH\); building the CPU-only addon with node-gyp" \
    "says: cmake-js failed; building the CPU-only addon with node-gyp"
  expect "$W/install-gyp.log" "qwen-node: built build/Release/qwen\.node with node-gyp" "says: built with node-gyp"
  run_in "$W/app-gyp" "$W/bin" "$W/demo-gyp.log" npx --no qwen-node demo --max-new-tokens 8 --device cpu \
    || fail "demo on the node-gyp build" "$W/demo-gyp.log"
  expect "$W/demo-gyp.log" "^[1-8] tokens in" "demo works on the node-gyp build"
fi

echo "prebuilt-install test: PASS ($checks checks, $((SECONDS - T0)) s)"
if [ "${QWEN_INSTALL_TEST_KEEP:-0}" = 1 ]; then echo "scratch dir kept: $W"; else rm -rf "$W"; fi
exit 0
