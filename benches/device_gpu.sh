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
# the whole test set), and the training figure: training.md, training.csv, training.log,
# metrics.jsonl (the shi-cornish IWAE-5 row for TRAIN_BUDGET seconds, default 180; see its
# step below). ADAPTER picks the adapter (a name substring; default: the best one);
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

# The training figure: the shi-cornish IWAE-5 row (`uvae reproduce shi-cornish --runs iwae-k5`,
# the paper's settings on the full data) for as many epochs as fit in TRAIN_BUDGET seconds
# (default 180), with the test bound every TEST_EVERY epochs (default 2, so epochs with and
# without it are both timed; TEST_K default 100, TEST_LIMIT default 2000 images), stopped by
# SIGINT (which saves and stops). The budget shrinks so the whole script ends within
# SCRIPT_BUDGET seconds (default 570: one 10-minute device call). Writes training.log (every
# console line with its wall-clock time), metrics.jsonl and config.json of the run,
# training.csv (per epoch: wall and training seconds, validation and test NLL) and
# training.md (seconds per epoch and what the full 3,280 epochs take at that pace).
# TRAIN_EXTRA adds flags (e.g. "--train-limit 2000" for a try on a small machine).
left=$(( ${SCRIPT_BUDGET:-570} - SECONDS - 30 ))
budget=${TRAIN_BUDGET:-180}
[ "$left" -lt "$budget" ] && budget=$left
if [ "$budget" -lt 30 ]; then
  echo "no time left for the training figure ($SECONDS s used)" | tee "$out/training.md" >&2
  exit 0
fi
step "shi-cornish iwae-k5 on the GPU for $budget s"
run=${TRAIN_DIR:-/tmp/uvae-device-train}
rm -rf "$run"
read -ra extra <<<"${TRAIN_EXTRA:-}"
# Each line stamped with the wall clock (seconds, bash's EPOCHREALTIME) as it arrives.
timeout -s INT -k 60 "$budget" "$uvae" reproduce shi-cornish --runs iwae-k5 --out "$run" \
  --backend gpu "${adapter[@]}" --test-every "${TEST_EVERY:-2}" --test-k "${TEST_K:-100}" \
  --test-limit "${TEST_LIMIT:-2000}" "${extra[@]}" 2>&1 \
  | while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$out/training.log"
cp "$run/iwae-k5-seed0/metrics.jsonl" "$run/iwae-k5-seed0/config.json" "$out/" 2>/dev/null || true
"${PYTHON:-python3}" - "$out" "$budget" <<'PY' || echo "no summary (python3 missing or no epoch finished)" >&2
import json, statistics, sys
out, budget = sys.argv[1], float(sys.argv[2])
m = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
cfg = json.load(open(f"{out}/config.json"))
# Wall time of each epoch: between the console's epoch lines (the first from the run's start).
stamps, start = [], None
for line in open(f"{out}/training.log"):
    t, _, text = line.partition(" ")
    if start is None and "training" in text and "epochs" in text:
        start = float(t)
    if text.lstrip().startswith("epoch "):
        stamps.append(float(t))
wall = [b - a for a, b in zip([start or 0.0] + stamps, stamps)]
rows = ["epoch,wall_s,train_s,val_nll,test_nll"]
for e, w in zip(m, wall + [None] * len(m)):
    test = "" if e.get("test_lk") is None else f"{-e['test_lk']:.3f}"
    rows.append(f"{e['epoch']},{'' if w is None else f'{w:.2f}'},{e['seconds']:.2f},{-e['val_lk']:.3f},{test}")
open(f"{out}/training.csv", "w").write("\n".join(rows) + "\n")
# Medians over the epochs, the first (pipelines compiled, data uploaded) left out.
later = list(zip(m, wall))[1:] or list(zip(m, wall))
plain = [w for e, w in later if e.get("test_lk") is None]
tested = [w for e, w in later if e.get("test_lk") is not None]
train = statistics.median(e["seconds"] for e in m)
per = statistics.median(plain or tested)
extra = statistics.median(tested) - per if plain and tested else 0.0
full = 3280 * per + 20 * extra  # the protocol scores the test bound about 20 times
last = next((e for e in reversed(m) if e.get("test_lk") is not None), None)
md = [
    f"# shi-cornish iwae-k5 on the GPU: {len(m)} epochs in a {budget:.0f} s budget",
    "",
    f"- training steps: {train:.2f} s per epoch (median, metrics.jsonl `seconds`)",
    f"- wall per epoch with validation (L_{cfg['val_k']} on {cfg['valid_size']} images): {per:.1f} s; the test bound (L_{cfg['test']['k']}) adds {extra:.1f} s",
    f"- the paper's 3,280 epochs at this pace: {full / 3600:.1f} h (plus the final L_5000 scoring)",
    f"- test NLL after epoch {last['epoch']}: {-last['test_lk']:.2f} (L_{last['test_k']})" if last else "- no test bound yet",
    "",
    "Per epoch: training.csv; the run's metrics.jsonl and config.json beside it.",
]
open(f"{out}/training.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
