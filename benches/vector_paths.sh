#!/usr/bin/env bash
# Checks that every vector path trains to the same bits, GEMMs included.
#
# uvae's own elementwise kernels are capped at run time (UVAE_VECTOR_CAP, checked by
# tests/integration/vector_paths.rs). matrixmultiply picks its sgemm kernel by itself at run
# time (AVX-512F where the CPU has it, else FMA+AVX2); only its build-time switch
# MMTEST_FEATURE (the features it may use, comma-separated) limits it. So this script builds
# uvae twice, as shipped and with MMTEST_FEATURE=fma,avx2, trains the same short run with
# each (the second also capped at AVX2) and compares the checkpoints byte for byte. On a CPU
# without AVX-512 both builds run the same kernels and the check is trivially true.
#
#   benches/vector_paths.sh            # about 3 minutes on 2 cores (two incremental builds)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build() { # $1: where to put the binary; the rest: environment for cargo
  local dest=$1
  shift
  env "$@" cargo build --release --quiet --bin uvae
  cp target/release/uvae "$dest"
}
build "$work/uvae-shipped"
build "$work/uvae-avx2" MMTEST_FEATURE=fma,avx2
# Leave target/ as a plain build finds it.
cargo build --release --quiet --bin uvae
train() { # $1: binary, $2: directory to run in; the rest: environment
  local bin=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  (cd "$dir" && env "$@" "$bin" train --backend cpu --threads 2 \
    --data "$OLDPWD/assets/mnist" --train-limit 1100 --valid-size 100 --batch 100 --k 50 \
    --epochs 2 --seed 5 --out run | grep '^backend:')
}
a=$(train "$work/uvae-shipped" "$work/a")
b=$(train "$work/uvae-avx2" "$work/b" UVAE_VECTOR_CAP=avx2)
echo "shipped build:   $a"
echo "AVX2-only build: $b"
if cmp -s "$work/a/run/checkpoint.safetensors" "$work/b/run/checkpoint.safetensors"; then
  echo "checkpoints identical: the two paths trained to the same bits"
else
  echo "checkpoints DIFFER between the two paths" >&2
  exit 1
fi
