#!/bin/bash
# GPU check from a snapshot of HEAD (README "GPU check"): exports the committed tree to .devbuild/snap (git-ignored),
# builds the CUDA addon (sm_90 only: the lent machine is an H100/H200), op_check and dist there, and stages node and
# node_modules (stage-device.sh). Uncommitted edits in the checkout do not reach the GPU run.
# Device call: carry [".device", ".devbuild"], command:
#   source .device/on-device.sh && cd .devbuild/snap && tar -xJf ../../.device/node_modules.tar.xz && bash scripts/device-check.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.devbuild/' .git/info/exclude 2>/dev/null || echo '/.devbuild/' >> .git/info/exclude
rm -rf .devbuild/snap && mkdir -p .devbuild/snap
git archive HEAD | tar -x -C .devbuild/snap
( cd .devbuild/snap && ln -s ../../node_modules node_modules \
  && npx cmake-js compile --CDCMAKE_CUDA_ARCHITECTURES=90-real > ../build.log 2>&1 \
  && sh cuda/test/build_op_check.sh build/op_check "--generate-code=arch=compute_90,code=sm_90" >> ../build.log 2>&1 \
  && npx tsc -p . && rm node_modules && rm -rf build/CMakeFiles build/*.ninja build/CMakeCache.txt \
  && tar -cJf build.tar.xz build && rm -rf build ) \
  || { tail -20 .devbuild/build.log; exit 1; }
# build/ goes as build.tar.xz (31 MB of sm_90 binaries -> ~3.5 MB): the carry is 64 MiB in all, and .device's node and
# node_modules take ~38 of it. scripts/device-check.sh unpacks it.
[ -s .device/node_modules.tar.xz ] && [ -s .device/node.xz ] || bash scripts/stage-device.sh
du -sch .device .devbuild | tail -1
