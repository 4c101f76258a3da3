#!/bin/bash
# The GPU check, run on the lent GPU machine by one device call (see README "GPU check"). Builds nothing there:
# carry ".device" (from ../shared/device/stage.sh), "build" (a local CUDA build) and "dist" (tsc output).
#   device run: source .device/on-device.sh && bash scripts/device-check.sh      (timeout ~540 s)
# Prints a short table at the end; full logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/qwen-out}; mkdir -p "$OUT"
t_start=$(date +%s)
step() { echo; echo "=== $1 ($(( $(date +%s) - t_start )) s)"; }

step "backends"
node -e "console.log(JSON.stringify(require('./dist/backends.js').backends().cuda))" | tee "$OUT/backends.json"

step "op tests (CPU and CUDA bf16/fp16/fp32) + CUDA end-to-end vs CPU"
npx jest test/ops.test.ts test/cuda.test.ts --runInBand --json --outputFile="$OUT/jest-gpu.json" 2>&1 | tail -40 > "$OUT/jest-gpu.log"
node -e "const r=require('$OUT/jest-gpu.json');console.log('gpu tests:',r.numPassedTests,'passed,',r.numFailedTests,'failed');for(const s of r.testResults)for(const t of s.assertionResults)if(t.status==='failed')console.log('FAIL',t.fullName,'\n',(t.failureMessages[0]||'').slice(0,600))"
grep -h "max rel err" "$OUT/jest-gpu.log" || true

step "compute-sanitizer memcheck over the CUDA op tests"
if command -v compute-sanitizer >/dev/null; then
  timeout 150 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
    node node_modules/.bin/jest test/ops.test.ts -t 'cuda bf16' --runInBand > "$OUT/memcheck.log" 2>&1
  echo "memcheck exit $? ($(grep -c 'Invalid' "$OUT/memcheck.log") invalid accesses)"; tail -3 "$OUT/memcheck.log"
fi

step "7b random checkpoint (bf16) for the benchmark"
CK=/tmp/qwen7b
node bin/qwen-node.js make-random --preset 7b --dtype bf16 --seed 1 --out $CK 2>&1 | tail -1

step "qwen-node benchmark, 7b bf16 on CUDA"
node bin/qwen-node.js bench --model $CK --device cuda --prompt 2048 --decode 64 --json > "$OUT/bench-cuda.json" 2>"$OUT/bench-cuda.err"; tail -3 "$OUT/bench-cuda.err"
node -e "const r=require('$OUT/bench-cuda.json');console.log('prefill 2048:',r.prefill.ms.toFixed(1),'ms;','decode bs1:',r.decode.tokPerS.toFixed(1),'tok/s,',r.decode.gbs.toFixed(0),'GB/s')" || true

step "continuous batching on CUDA, 7b bf16: clients 1/16/64, 200-token prompts, 64 new tokens (goal: batch 64 >= 7000 tok/s)"
timeout 150 node -e "
require('./dist/bench/concurrency.js').runConcurrency({ dir: '$CK', device: 'cuda', dtype: 'bf16', mode: 'cuda-bf16', threads: 16,
  levels: [1, 16, 64], promptTokens: 200, newTokens: 64, log: (s) => console.error(s) })
  .then((r) => require('fs').writeFileSync('$OUT/concurrency-cuda.json', JSON.stringify(r, null, 1)))
  .catch((e) => { console.error('concurrency failed:', e.message); process.exit(1); });" 2>&1 | tail -12

step "HF transformers baseline on the same card"
timeout 120 python3 .device/hf_baseline.py 2>&1 | tail -8 | tee "$OUT/hf.log"

step "done"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
