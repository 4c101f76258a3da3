#!/bin/bash
# The GPU check, run on the lent GPU machine by one device call (see README "GPU check"). Builds nothing there:
# carry ".device" (from ../shared/device/stage.sh), "build" (a local CUDA build, with build/op_check from
# cuda/test/build_op_check.sh) and "dist" (tsc output).
#   device run: source .device/on-device.sh && bash scripts/device-check.sh      (timeout ~480 s)
# Every part has its own time limit, so a hang in one still leaves the others' answers. The 7b checkpoint is written
# to /dev/shm by a background job from the start (CPU work that overlaps the GPU tests).
# QWEN_CHECK_PARTS (default "ops diag e2e jest bench profile conc memcheck hf") picks parts. Logs go to $OUT (8 files at most).
set -uo pipefail
OUT=${OUT:-/tmp/qwen-out}; mkdir -p "$OUT"
PARTS=" ${QWEN_CHECK_PARTS:-ops diag e2e jest bench profile conc memcheck hf} "
has() { [[ "$PARTS" == *" $1 "* ]]; }
t_start=$(date +%s)
step() { echo; echo "=== $1 ($(( $(date +%s) - t_start )) s)"; }
CK=/dev/shm/qwen7b

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if has bench || has conc || has profile; then
  (node bin/qwen-node.js make-random --preset 7b --dtype bf16 --seed 1 --out $CK > /tmp/make7b.log 2>&1; echo "exit $?" >> /tmp/make7b.log) &
  MK=$!
fi

step "backends"
node -e "console.log(JSON.stringify(require('./dist/backends.js').backends().cuda))"

if has ops && [ -x build/op_check ]; then
  step "op_check (node-free): every op vs a host reference, bf16/fp16/fp32, then per-kernel perf"
  timeout 60 build/op_check --perf > "$OUT/op_check.log" 2>&1; echo "op_check exit $?"
  grep -E "^(FAIL|====|cuda_info)|passed," "$OUT/op_check.log" | head -40
  grep -E "^PERF" "$OUT/op_check.log"
  echo "-- again with the scalar split-attention kernel (QWEN_ATTN_SPLIT=scalar):"
  QWEN_ATTN_SPLIT=scalar timeout 60 build/op_check --perf > /tmp/op_check_scalar.log 2>&1; echo "op_check exit $?"
  grep -E "^FAIL|passed,|^PERF attention" /tmp/op_check_scalar.log | head -30
fi

JEST="node node_modules/jest/bin/jest.js --runInBand"
failures() {  # jest --json file -> counts and the failures
  node -e "const r=require('$1');console.log('tests:',r.numPassedTests,'passed,',r.numFailedTests,'failed');for(const s of r.testResults){if(s.message&&!s.assertionResults.length)console.log('SUITE',s.message.slice(0,800));for(const t of s.assertionResults)if(t.status==='failed')console.log('FAIL',t.fullName,'\\n',(t.failureMessages[0]||'').slice(0,500))}" || echo "no jest result in $1"
}

if has diag; then
  step "diag: 40 / 300 / 513 / 600-token prompts on the tiny checkpoint, one CUDA model at a time"
  timeout 45 node scripts/device-diag600.js > "$OUT/diag.log" 2>&1; echo "diag exit $?"
  grep -v "step:" "$OUT/diag.log" | head -20; echo "last lines:"; tail -3 "$OUT/diag.log" | cut -c1-200
fi

if has e2e; then
  step "jest: CUDA end to end vs CPU (test/cuda.test.ts; QWEN_E2E_FILTER picks tests)"
  timeout 100 $JEST test/cuda.test.ts -t "${QWEN_E2E_FILTER:-.}" --verbose --json --outputFile=/tmp/jest-e2e.json > "$OUT/jest-e2e.log" 2>&1; echo "jest exit $?"
  failures /tmp/jest-e2e.json; grep -h "max rel err" "$OUT/jest-e2e.log" || tail -15 "$OUT/jest-e2e.log"
fi

if has jest; then
  step "jest: every op on CUDA bf16/fp16/fp32 vs float64 references (test/ops.test.ts, CUDA blocks only)"
  timeout 120 $JEST test/ops.test.ts -t "${QWEN_OPS_FILTER:-^cuda}" --json --outputFile=/tmp/jest-ops.json > "$OUT/jest-ops.log" 2>&1; echo "jest exit $?"
  failures /tmp/jest-ops.json
  echo "-- the linear tests again without cuBLAS (own GEMMs for T >= 64):"
  QWEN_CUBLAS=0 timeout 60 $JEST test/ops.test.ts -t '^cuda.*linear' --json --outputFile=/tmp/jest-nocublas.json > /dev/null 2>&1
  failures /tmp/jest-nocublas.json
fi

if has bench || has conc || has profile; then
  step "waiting for the 7b checkpoint"
  wait $MK; tail -2 /tmp/make7b.log; du -sh $CK
fi

if has bench; then
  step "qwen-node bench, 7b bf16 on CUDA (prompt 2048, 64 decode steps)"
  timeout 90 node bin/qwen-node.js bench --model $CK --device cuda --prompt 2048 --decode 64 --json > "$OUT/bench-cuda.json" 2>/tmp/bench-err.log
  echo "bench exit $?"; tail -5 /tmp/bench-err.log
  node -e "const r=require('$OUT/bench-cuda.json');console.log('prefill 2048:',r.prefill.ms.toFixed(1),'ms;','decode bs1:',r.decode.tokPerS.toFixed(1),'tok/s,',r.decode.gbs.toFixed(0),'GB/s')" || true
  nvidia-smi --query-gpu=memory.used --format=csv,noheader
fi

if has profile; then
  step "per-op GPU time (QWEN_CUDA_PROFILE=1): prefill 2048 + 64 decode steps at batch 1, then 64 clients"
  QWEN_CUDA_PROFILE=1 timeout 60 node bin/qwen-node.js bench --model $CK --device cuda --prompt 2048 --decode 64 2>&1 | grep -E "prefill|decode|profile" | head -24
  QWEN_CUDA_PROFILE=1 timeout 60 node -e "
  require('./dist/bench/concurrency.js').runConcurrency({ dir: '$CK', device: 'cuda', dtype: 'bf16', mode: 'cuda-bf16', threads: 16,
    levels: [64], promptTokens: 200, newTokens: 64, log: (s) => console.error(s) }).catch((e) => { console.error(e.stack); process.exit(1); });" 2>&1 | head -24
fi

if has conc; then
  step "continuous batching on CUDA, 7b bf16: clients 1/16/64, 200-token prompts, 64 new tokens (goal: batch 64 >= 7000 tok/s)"
  timeout 100 node -e "
  require('./dist/bench/concurrency.js').runConcurrency({ dir: '$CK', device: 'cuda', dtype: 'bf16', mode: 'cuda-bf16', threads: 16,
    levels: [1, 16, 64], promptTokens: 200, newTokens: 64, log: (s) => console.error(s) })
    .then((r) => require('fs').writeFileSync('$OUT/concurrency-cuda.json', JSON.stringify(r, null, 1)))
    .catch((e) => { console.error('concurrency failed:', e.stack); process.exit(1); });" 2>&1 | tail -14
fi

if has memcheck && command -v compute-sanitizer >/dev/null; then
  step "compute-sanitizer memcheck over op_check (all ops, all dtypes)"
  timeout 60 compute-sanitizer --tool memcheck --leak-check no --report-api-errors no --error-exitcode 9 build/op_check > "$OUT/memcheck.log" 2>&1
  echo "memcheck exit $? ($(grep -c 'Invalid' "$OUT/memcheck.log") invalid accesses)"; grep -m5 -A6 "Invalid" "$OUT/memcheck.log"; tail -2 "$OUT/memcheck.log"
fi

if has hf; then
  step "HF transformers baseline on the same card"
  timeout 120 python3 .device/hf_baseline.py 2>&1 | tail -8
fi

step "done"
