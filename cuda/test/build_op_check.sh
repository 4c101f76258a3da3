#!/bin/sh
# Builds the stand-alone CUDA op check (no Node, no cmake): ./cuda/test/build_op_check.sh [out] [archs]
# Run from the repository root. Default out: build/op_check; default archs: sm_80 + sm_90 (H100 = sm_90).
# Run it with LD_LIBRARY_PATH=/usr/local/cuda/lib64 (for the dlopen of libcublas.so.13): ./build/op_check [--perf]
set -e
cd "$(dirname "$0")/../.."
OUT=${1:-build/op_check}
ARCHS=${2:-"--generate-code=arch=compute_80,code=sm_80 --generate-code=arch=compute_90,code=sm_90"}
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
mkdir -p "$(dirname "$OUT")"
# shellcheck disable=SC2086
$NVCC -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr $ARCHS -I cpp -I cuda -Xcompiler -Wall \
  cuda/*.cu cuda/cublas_dyn.cc cuda/pick_host.cc cpp/core/dtype.cc cpp/core/kv_cache.cc cpp/core/pick_tables.cc cpp/cpu/sample.cc cpp/cpu/sample_fx.cc cpp/cpu/thread_pool.cc \
  cuda/test/op_check.cu -o "$OUT" -ldl
echo "built $OUT"
