#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one run on a lent device machine (../.library/device:
# an H100/H200 with no Rust toolchain and no network), so that a session with one spends its
# few minutes of device time measuring rather than setting up.
#
#   benches/device_gpu.sh prepare   # here: a stripped release binary and the PyTorch peer
#                                   # into .device/, the Vulkan loader's packages into .gl/
#   benches/device_gpu.sh           # there, with carry [".device", ".gl"]: writes under $OUT
#
# What the run writes (each also printed): gpu.txt (nvidia-smi, `uvae devices`), check.txt
# (`uvae check` as shipped and with UVAE_SHADER_CHECKS=1), profile.txt and profile.json
# (`uvae profile --backend gpu`, K = 50, batch 100: per-kernel times, GFLOP/s, dispatch
# structure), compare.md (`benches/compare_peer.sh gpu` against PyTorch CUDA, eval L_5000 on
# the whole test set). ADAPTER picks the adapter (a name substring; default: the best one);
# PROFILE_STEPS (default 20) sets the profile's timed steps; STEPS, REPEATS, EVAL_K and
# EVAL_IMAGES pass through to compare_peer.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-run}" = prepare ]; then
  set -e
  cargo build --release --quiet
  mkdir -p .device .gl
  # The binary carries debug info (82 MB): stripped, it fits the device tool's 64 MiB.
  strip -o .device/uvae target/release/uvae
  cp ../shared/peers/torch_iwae_bench.py .device/
  # The loader and its EGL/GL companions, as the device README prescribes.
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  # shellcheck disable=SC2086
  apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  du -sh .device .gl
  exit 0
fi

out=${OUT:-runs/device}
mkdir -p "$out"
if compgen -G ".gl/*.deb" >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$icd}
uvae=${UVAE:-.device/uvae}
[ -x "$uvae" ] || { echo "no $uvae: run '$0 prepare' first and carry .device" >&2; exit 2; }
adapter=()
[ -n "${ADAPTER:-}" ] && adapter=(--adapter "$ADAPTER")

step() { echo "== $*" >&2; }
step "adapters"
{ nvidia-smi -L 2>&1 || true; "$uvae" devices 2>&1; } | tee "$out/gpu.txt"
step "uvae check, as shipped and with the runtime checks"
{ "$uvae" check "${adapter[@]}" 2>&1; UVAE_SHADER_CHECKS=1 "$uvae" check "${adapter[@]}" 2>&1; } \
  | tee "$out/check.txt" | grep -E "passed|failed|FAIL|error" >&2
step "uvae profile --backend gpu, K = 50, batch 100"
prof=(profile --backend gpu "${adapter[@]}" --k 50 --batch 100 --steps "${PROFILE_STEPS:-20}" --warmup 3)
"$uvae" "${prof[@]}" --trace "$out/profile.trace.json" 2>&1 | tee "$out/profile.txt"
"$uvae" "${prof[@]}" --json >"$out/profile.json" 2>/dev/null
step "compare_peer.sh gpu: uvae against PyTorch CUDA"
UVAE=$uvae PYTHON=${PYTHON:-python3} PEER=${PEER:-.device/torch_iwae_bench.py} \
  EVAL_IMAGES=${EVAL_IMAGES:-10000} benches/compare_peer.sh gpu 2>&1 | tee "$out/compare.md"
