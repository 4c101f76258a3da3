#!/bin/sh
# prebuildify calls "$PREBUILD_NODE_GYP rebuild --target=... --arch=x64 --release"; Node-API is ABI-stable, so the
# arguments are ignored and cmake-js builds the one addon (CPU + CUDA when nvcc exists), which prebuildify then strips
# and moves to prebuilds/<platform>-<arch>/.
set -e
cd "$(dirname "$0")/.."
exec ./node_modules/.bin/cmake-js rebuild --log-level warn
