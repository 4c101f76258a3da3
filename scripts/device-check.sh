#!/bin/bash
# The GPU check, run on the lent GPU machine by one device call (README "GPU check"). Builds nothing there: run it
# from the snapshot that scripts/stage-snapshot.sh builds (addon, op_check and dist of HEAD), carrying .device and
# .devbuild:
#   source .device/on-device.sh && cd .devbuild/snap && tar -xJf ../../.device/node_modules.tar.xz && bash scripts/device-check.sh
# QWEN_CHECK_PARTS lists the parts to run, IN THAT ORDER (default: the issue's check, below). Every part has its
# own time limit, so a hang in one still leaves the others' answers. The 7b checkpoint is written to /dev/shm by a
# background job from the start (CPU work that overlaps the GPU tests). Logs go to $OUT (8 files at most).
#   ops       op_check: every CUDA op vs float64 at odd and Qwen shapes, bf16/fp16/fp32, then per-kernel perf
#   diag      40/300/513/600-token prompts on the tiny checkpoint, one CUDA model at a time, each step logged
#   e2e       test/cuda.test.ts: CUDA vs CPU logits (tiny, NTK + logN), greedy equality, batched == alone
#   jest      test/ops.test.ts on the CUDA backends (QWEN_OPS_FILTER, default '^cuda')
#   pick      test/pick.test.ts, sample.test.ts on CUDA: native picks == the TS sampler; sample-fx.test.ts: the device
#             draw (QWEN_SAMPLE_FX=1) == its host reference
#   bench     qwen-node bench, 7b bf16: prefill 2048 (median of 5), 64 greedy decode steps
#   sweep     decode with the greedy pick in the backend: batch 1 at HF's contexts (prompt 32, 128 steps) and at
#             2048, then batch 1 / 4 / 8 / 16 / 64 at context ~200 (issue #4's batch goal; HF's generate() method),
#             each size lockstep and then chained as generate() runs it (overlapped steps; its launch gap printed)
#   rope, pdl, gemm, graph   A/B of the switches (QWEN_CUDA_FUSED_ROPE=0, QWEN_CUDA_PDL, QWEN_GEMM_SKINNY,
#             QWEN_SKINNY_MIN_T=2, QWEN_CUBLAS_MIN_T=9, QWEN_CUDA_GRAPH): timing on the same warm card, then
#             test/cuda.test.ts under each
#   fold      QWEN_FOLD_NORM=1 (RMSNorm and residual add folded into the decode GEMVs): decode batch 1 / 8, alone and
#             with PDL + graphs, then test/cuda.test.ts under it
#   sample    sampled decode (temperature 0.7, top_p 0.8) at batch 1 / 16 / 64: the host draw vs QWEN_SAMPLE_FX=1
#   profile   QWEN_CUDA_PROFILE=1 (GPU time per op and per step class): the bench (3 prefills of 2048 after a
#             warm-up 2048, 32 decode steps; the prefill's ops, then decode's), then batch 64 at context ~200
#   conc      continuous batching: 1 / 16 / 64 clients, 200-token prompts, 64 new tokens
#   hf        ../shared/device/hf_baseline.py (HF transformers, eager) on the same card
#   memcheck  compute-sanitizer memcheck over op_check
#   summary   one table of every greedy decode sweep of this run (the sweep part's and each A/B part's), each figure
#             with its ratio to the first (lib/bench/compare.ts): the A/B verdicts at a glance; the sampled ones apart
# The default, "ops e2e jest pick bench sweep hf memcheck", is issue #4's check: every op and the logits against the
# CPU, the benchmark, HF on the same card, memcheck. Its parts' time limits add up to 16 minutes and a device call
# may run 10: if a call is cut short, run it as two ("ops e2e jest pick", then "bench sweep hf memcheck"). The A/B
# parts (rope pdl gemm graph fold sample), profile, conc, diag and summary are for tuning: name them. An unknown name
# stops the script before anything runs.
#
# QWEN_CHECK_DEVICE=cpu is a dry run of the script itself on a machine without a GPU (the timings and the 7b figures
# mean nothing there; the tiny checkpoint replaces the 7b one): it finds a broken part before a device session does.
set -uo pipefail
OUT=${OUT:-/tmp/qwen-out}; mkdir -p "$OUT"
DEV=${QWEN_CHECK_DEVICE:-cuda}
# Scratch (jest reports, each sweep's JSON: the summary reads them all), fresh for every run: a warm machine keeps
# /tmp between calls, and an earlier call's files must not pass for this one's.
W=${QWEN_CHECK_WORK:-$(mktemp -d /tmp/qwen-check.XXXXXX)}; mkdir -p "$W"
THREADS=16
PARTS=${QWEN_CHECK_PARTS:-ops e2e jest pick bench sweep hf memcheck}
t_start=$(date +%s)
[ -d build ] || [ ! -f build.tar.xz ] || tar -xJf build.tar.xz  # the snapshot's addon and op_check (stage-snapshot.sh)
step() { echo; echo "=== $1 ($(( $(date +%s) - t_start )) s)"; }
CK=/dev/shm/qwen7b
PRESET=7b
[ "$DEV" = cuda ] || { CK=$W/qwen-dry-tiny; PRESET=tiny; THREADS=2; }
JEST="node node_modules/jest/bin/jest.js --runInBand"
failures() {  # jest --json file -> counts and the failures
  node -e "const r=require('$1');console.log('tests:',r.numPassedTests,'passed,',r.numFailedTests,'failed');for(const s of r.testResults){if(s.message&&!s.assertionResults.length)console.log('SUITE',s.message.slice(0,800));for(const t of s.assertionResults)if(t.status==='failed')console.log('FAIL',t.fullName,'\\n',(t.failureMessages[0]||'').slice(0,500))}" || echo "no jest result in $1"
}
conc() {  # conc LEVELS TIMEOUT
  timeout "$2" node -e "
  require('./dist/bench/concurrency.js').runConcurrency({ dir: '$CK', device: '$DEV', dtype: 'bf16', mode: '$DEV-bf16', threads: $THREADS,
    levels: [$1], promptTokens: 200, newTokens: 64, log: (s) => console.error(s) })
    .then((r) => require('fs').writeFileSync('$OUT/concurrency-cuda.json', JSON.stringify(r, null, 1)))
    .catch((e) => { console.error('concurrency failed:', e.stack); process.exit(1); });" 2>&1 | tail -14
}
sweep() {  # sweep CONTEXTS DECODE_STEPS BATCH_SIZES TIMEOUT JSON_PATH [EXTRA_OPTIONS]
  timeout "$4" node -e "
  require('./dist/bench/sweep.js').runSweep({ dir: '$CK', device: '$DEV', dtype: 'bf16', mode: '$DEV-bf16', threads: $THREADS,
    contexts: [$1], decodeSteps: $2, batchSizes: [$3], batchContext: 200, batchSteps: 32, pick: true, peakGflops: null, ${6:-}
    log: (s) => console.error(s) })
    .then((r) => require('fs').writeFileSync('$5', JSON.stringify(r, null, 1)))
    .catch((e) => { console.error('sweep failed:', e.stack); process.exit(1); });" 2>&1
}
MK=
need_7b() { [ -n "$MK" ] && { step "waiting for the 7b checkpoint"; wait "$MK"; tail -1 $W/make7b.log; MK=; }; }

part_ops() {
  step "op_check (node-free): every op vs a float64 reference, bf16/fp16/fp32, then per-kernel perf"
  timeout 120 build/op_check --perf > "$OUT/op_check.log" 2>&1; echo "op_check exit $?"
  grep -E "^(FAIL|====|cuda_info)|passed," "$OUT/op_check.log" | head -40
  grep -E "^PERF" "$OUT/op_check.log"
}
part_diag() {
  step "diag: 40 / 300 / 513 / 600-token prompts on the tiny checkpoint, one CUDA model at a time"
  timeout 30 node scripts/device-diag600.js > "$OUT/diag.log" 2>&1; echo "diag exit $?"
  grep -v "step:" "$OUT/diag.log" | head -20; echo "last lines:"; tail -3 "$OUT/diag.log" | cut -c1-200
}
part_e2e() {
  step "jest: CUDA end to end vs CPU (test/cuda.test.ts; QWEN_E2E_FILTER picks tests)"
  timeout 150 $JEST test/cuda.test.ts -t "${QWEN_E2E_FILTER:-.}" --verbose --json --outputFile=$W/jest-e2e.json > "$OUT/jest-e2e.log" 2>&1; echo "jest exit $?"
  failures $W/jest-e2e.json; grep -h "max rel err" "$OUT/jest-e2e.log" || tail -15 "$OUT/jest-e2e.log"
}
part_jest() {
  step "jest: ops on the CUDA backends vs float64 references (test/ops.test.ts)"
  timeout 240 $JEST test/ops.test.ts -t "${QWEN_OPS_FILTER:-^cuda}" --json --outputFile=$W/jest-ops.json > "$OUT/jest-ops.log" 2>&1; echo "jest exit $?"
  failures $W/jest-ops.json
}
part_pick() {
  step "jest: native greedy and sampled picks on CUDA vs the TS sampler, device draw vs its host reference (test/pick.test.ts, test/sample.test.ts, test/sample-fx.test.ts: CUDA blocks)"
  timeout 90 $JEST test/pick.test.ts test/sample.test.ts test/sample-fx.test.ts -t cuda --json --outputFile=$W/jest-pick.json > $W/jest-pick.log 2>&1; echo "jest exit $?"
  failures $W/jest-pick.json
}
part_bench() {
  need_7b
  step "qwen-node bench, 7b bf16 on CUDA (prompt 2048 timed 5 times, 64 greedy decode steps)"
  timeout 40 node bin/qwen-node.js bench --model $CK --device $DEV --prompt 2048 --repeat 5 --decode 64 --json > "$OUT/bench-cuda.json" 2>$W/bench-err.log
  echo "bench exit $?"; tail -3 $W/bench-err.log
  node -e "const r=require('$OUT/bench-cuda.json');console.log('prefill 2048:',r.prefill.ms.toFixed(1),'ms (median of',r.prefill.samples.map((x)=>x.toFixed(1)).join(', ')+');','decode bs1:',r.decode.tokPerS.toFixed(1),'tok/s,',r.decode.gbs.toFixed(0),'GB/s')" || true
}
part_sweep() {
  need_7b
  step "decode, greedy pick in the backend: batch 1 at contexts 32 (HF's) and 2048, batch 1/4/8/16/64 at ~200 (goal >= 7000 tok/s at 64), lockstep and chained"
  sweep "32, 2048" 128 "1, 4, 8, 16, 64" 90 "$OUT/sweep-cuda.json" | grep -v "^\s*$" | tail -10
}
# The opt-in paths (not yet run on a GPU when written). Each: its timing on the warm card, then its logits against
# the CPU (test/cuda.test.ts, the cases that exercise it: prompts of 9-64 rows, or decode steps that replay a graph).
# Compare with the sweep part's figures.
# (A variable set for one sweep goes through a subshell's export: `env X=1 sweep` cannot run a shell function.)
e2e_with() {  # e2e_with "ENV=1 ..." FILTER TAG
  env $1 timeout 90 $JEST test/cuda.test.ts -t "$2" --json --outputFile=$W/jest-$3.json > $W/jest-$3.log 2>&1
  failures $W/jest-$3.json; grep -h "max rel err" $W/jest-$3.log
}
part_rope() {
  need_7b
  step "QWEN_CUDA_FUSED_ROPE=0 (rope, then kv_store: the old two launches) at batch 1, against the sweep part's default"
  QWEN_CUDA_FUSED_ROPE=0 sweep "32, 2048" 64 "" 60 $W/ab-rope.json | grep -E "decode|failed"
}
part_pdl() {
  need_7b
  step "QWEN_CUDA_PDL=1 (programmatic dependent launch): decode batch 1 and 16, then cuda.test.ts"
  QWEN_CUDA_PDL=1 sweep "32, 2048" 64 "1, 16" 60 $W/ab-pdl.json | grep -E "decode|batch|failed"
  e2e_with "QWEN_CUDA_PDL=1" 'logits of a (24|40)-token' pdl
}
part_gemm() {
  need_7b
  step "9-64 rows: QWEN_CUBLAS_MIN_T=9 (cuBLAS) and QWEN_GEMM_SKINNY=1 (split-K mma.sync) at batch 16 / 64; 2-8 rows: the skinny GEMM instead of the GEMV (QWEN_SKINNY_MIN_T=2) at batch 4 / 8; then cuda.test.ts with skinny from 2 rows"
  local e
  for e in "QWEN_CUBLAS_MIN_T=9|16, 64" "QWEN_GEMM_SKINNY=1|16, 64" "QWEN_GEMM_SKINNY=1 QWEN_SKINNY_MIN_T=2|4, 8"; do
    echo "${e%%|*}"; (export ${e%%|*}; sweep "" 0 "${e##*|}" 60 "$W/ab-gemm-$(echo ${e%%|*} | tr ' ' '_').json") | grep -E "batch +[0-9]+ at|failed"
  done
  e2e_with "QWEN_GEMM_SKINNY=1 QWEN_SKINNY_MIN_T=2" 'each alone|logits of a (24|40)' skinny
}
part_graph() {
  need_7b
  step "QWEN_CUDA_GRAPH=1 (layer loop replayed as a CUDA graph), alone and with PDL: decode batch 1, then cuda.test.ts"
  QWEN_CUDA_GRAPH=1 sweep "32, 2048" 64 "" 60 $W/ab-graph.json | grep -E "decode|failed"
  QWEN_CUDA_GRAPH=1 QWEN_CUDA_PDL=1 sweep "32" 64 "" 60 $W/ab-graph-pdl.json | grep -E "decode|failed"
  e2e_with "QWEN_CUDA_GRAPH=1" 'greedy|logits of a 24-token|each alone' graph
}
part_fold() {
  need_7b
  step "QWEN_FOLD_NORM=1 (two launches fewer per decode layer): batch 1 and 8 (batch 8 unfolded first: the sweep part's batches do not fold), then with PDL + graphs, then cuda.test.ts"
  QWEN_FOLD_NORM=0 sweep "" 0 "8" 60 $W/ab-fold0.json | grep -E "batch|failed"
  QWEN_FOLD_NORM=1 sweep "32, 2048" 64 "8" 60 $W/ab-fold.json | grep -E "decode|batch|failed"
  QWEN_FOLD_NORM=1 QWEN_CUDA_PDL=1 QWEN_CUDA_GRAPH=1 sweep "32" 64 "" 60 $W/ab-fold-all.json | grep -E "decode|failed"
  e2e_with "QWEN_FOLD_NORM=1" 'greedy|logits of a (5|24)-token|each alone' fold
}
part_sample() {
  need_7b
  step "sampled decode (temperature 0.7, top_p 0.8): host draw vs the device draw (QWEN_SAMPLE_FX=1) at batch 1 / 16 / 64"
  for e in QWEN_SAMPLE_FX=0 QWEN_SAMPLE_FX=1; do
    echo "$e"; (export $e; sweep "32" 32 "1, 16, 64" 60 "$W/sampled-$e.json" "sample: { temperature: 0.7, topK: 0, topP: 0.8 },") | grep -E "decode|batch|failed"
  done
}
part_profile() {
  need_7b
  step "per-op and per-step GPU time (QWEN_CUDA_PROFILE=1; each step class's first step is reported alone)"
  echo "-- bench: 3 prefills of 2048 (after a warm-up 2048), 32 decode steps at ~2048; the prefill's ops, then decode's"
  QWEN_CUDA_PROFILE=1 timeout 50 node bin/qwen-node.js bench --model $CK --device $DEV --prompt 2048 --repeat 3 --decode 32 > "$OUT/profile.log" 2>&1
  grep -E "prefill|decode:|steps rows=(1|2048) " "$OUT/profile.log"
  grep -E "profile\]" "$OUT/profile.log" | grep -v "steps rows" | grep -E "T=2048|rows=2048" | head -16
  grep -E "profile\]" "$OUT/profile.log" | grep -v "steps rows" | grep -E "T=1 |T=1$|rows=1 |rows=1$|R=1 |R=1$" | head -14
  echo "-- batch 64 at context ~200 (sweep)"
  QWEN_CUDA_PROFILE=1 sweep "" 0 "64" 60 $W/profile-sweep.json > $W/profile64.log 2>&1
  grep -E "batch 64|steps rows=64 " $W/profile64.log; grep -E "profile\]" $W/profile64.log | grep -E "T=64|R=64|rows=64" | grep -v "steps rows" | head -16
}
part_conc() {
  need_7b
  step "continuous batching on CUDA, 7b bf16: clients 1/16/64, 200-token prompts, 64 new tokens (goal: batch 64 >= 7000 tok/s)"
  conc "1, 16, 64" 50
}
part_hf() {
  step "HF transformers baseline on the same card"
  local hf=.device/hf_baseline.py
  [ -f "$hf" ] || hf=../../.device/hf_baseline.py  # run from .devbuild/snap: .device is the checkout's
  timeout 80 python3 "$hf" 2>&1 | tail -8
}
part_summary() {
  step "all decode sweeps of this run against the first (the sweep part's when it ran); sampled ones apart"
  compare_sweeps "$OUT/sweep-cuda.json" $W/ab-*.json
  compare_sweeps $W/sampled-*.json
}
compare_sweeps() {  # compare_sweeps FILE...: the table of those that exist, oldest first
  local files; files=$(ls -tr "$@" 2>/dev/null)
  [ -n "$files" ] || { echo "(none of: $*)"; return 0; }
  node -e "
  const fs = require('fs'), path = require('path');
  const runs = process.argv.slice(1).map((f) => ({ name: path.basename(f, '.json'), run: JSON.parse(fs.readFileSync(f, 'utf8')) }));
  console.log(require('./dist/bench/compare.js').compareSweeps(runs));" $files
}
part_memcheck() {
  command -v compute-sanitizer >/dev/null || return 0
  step "compute-sanitizer memcheck over op_check (all ops, all dtypes)"
  timeout 150 compute-sanitizer --tool memcheck --leak-check no --report-api-errors no --error-exitcode 9 build/op_check > "$OUT/memcheck.log" 2>&1
  echo "memcheck exit $? ($(grep -c 'Invalid' "$OUT/memcheck.log") invalid accesses)"; grep -m5 -A6 "Invalid" "$OUT/memcheck.log"; tail -2 "$OUT/memcheck.log"
}

gpu() { command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=$1 --format=csv,noheader || echo "(no nvidia-smi)"; }
gpu name,driver_version,memory.total
for p in $PARTS; do  # a typo must not cost a device session halfway through
  declare -F "part_$p" >/dev/null || { echo "unknown part '$p' in QWEN_CHECK_PARTS"; exit 2; }
done
needs_7b=
for p in $PARTS; do declare -f "part_$p" | grep -q need_7b && needs_7b=1; done
if [ -n "$needs_7b" ]; then  # some part calls need_7b
  (node bin/qwen-node.js make-random --preset $PRESET --dtype bf16 --seed 1 --out $CK > $W/make7b.log 2>&1; echo "exit $?" >> $W/make7b.log) &
  MK=$!
fi
step "backends"
node -e "console.log(JSON.stringify(require('./dist/backends.js').backends().cuda))"
for p in $PARTS; do "part_$p"; done
step "done"
gpu memory.used
