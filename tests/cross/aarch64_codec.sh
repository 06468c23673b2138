#!/usr/bin/env bash
# The FP8 codec builds and is right without x86 (Grace-Hopper is aarch64): fp8_codec.cc and what
# it needs, cross-compiled for aarch64 (Debian's g++-aarch64-linux-gnu) and run under qemu-user
# against every rounding case of tests/data/fp8; the same program natively, for comparison.
# Usage: aarch64_codec.sh   (run from the repository root)
set -euo pipefail
for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" > /dev/null ||
    { echo "FAIL: $tool is missing: scripts/install-deps installs g++-aarch64-linux-gnu and qemu-user"; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sources=(tests/cross/fp8_round_cases.cc kernels/cpu/fp8_codec.cc runtime/core/errors.cc
  runtime/core/dtype.cc)
aarch64-linux-gnu-g++ -std=c++20 -O2 -fopenmp -Wall -Werror -I. -Iinclude "${sources[@]}" -o "$tmp/arm"
file "$tmp/arm" | grep -q "ARM aarch64" || { echo "FAIL: not an aarch64 program"; exit 1; }
echo "== aarch64 (qemu-aarch64)"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$tmp/arm" tests/data/fp8
g++ -std=c++20 -O2 -fopenmp -I. -Iinclude "${sources[@]}" -o "$tmp/native"
echo "== $(uname -m)"
"$tmp/native" tests/data/fp8
