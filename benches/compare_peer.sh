#!/usr/bin/env bash
# Runs `uvae bench` and the PyTorch peer (../shared/peers/torch_iwae_bench.py) on the same
# machine, one configuration after the other, and prints a Markdown table of throughputs and
# their ratio (uvae / PyTorch).
#
#   PYTHON=/path/to/venv/bin/python benches/compare_peer.sh cpu      # CPU backend vs torch cpu
#   PYTHON=... benches/compare_peer.sh gpu                          # GPU backend vs torch cuda
#   MODEL=hvae PYTHON=... benches/compare_peer.sh cpu               # the two-layer model, against
#                                                                   # benches/torch_hvae_peer.py
#
# PYTHON must have torch and numpy. STEPS and REPEATS tune the length of each measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cpu}
py=${PYTHON:-python3}
model=${MODEL:-vae}
case $model in
  vae) peer=${PEER:-../shared/peers/torch_iwae_bench.py}; cfgs="iwae:iwae:50:100 iwae-dreg:dreg:50:100 iwae:iwae:5:20" ;;
  hvae) peer=${PEER:-benches/torch_hvae_peer.py}; cfgs="iwae:iwae:50:100 iwae:iwae:5:20" ;;
  *) echo "MODEL must be vae or hvae" >&2; exit 2 ;;
esac
steps=${STEPS:-20}
repeats=${REPEATS:-5}
uvae=${UVAE:-target/release/uvae}
[ -x "$uvae" ] || cargo build --release --quiet
case $device in
  cpu) backend=cpu; torch_dev=cpu ;;
  gpu) backend=gpu; torch_dev=cuda ;;
  *) echo "usage: $0 cpu|gpu" >&2; exit 2 ;;
esac
echo "| estimator | K | batch | uvae datapoints/s | PyTorch datapoints/s | ratio |"
echo "|---|---|---|---|---|---|"
# uvae name : peer name : k : batch
for cfg in $cfgs; do
  IFS=: read -r ours theirs k batch <<<"$cfg"
  # Small configurations need more steps for a stable timing.
  n=$steps; [ "$k" -le 5 ] && n=$((steps * 10))
  u=$("$uvae" bench --backend "$backend" --model "$model" --configs "$ours:$k:$batch" --steps "$n" --repeats "$repeats" --eval-k 0 --json 2>/dev/null | tail -1)
  # The bundled MNIST: the peer's own default path (../data beside it) exists only beside
  # ../shared, not on a device machine.
  t=$("$py" "$peer" --device "$torch_dev" --estimator "$theirs" --k "$k" --batch "$batch" --steps "$((n * repeats))" --data assets/mnist/train-images-idx3-ubyte.gz | tail -1)
  "$py" - "$u" "$t" <<'PY'
import json, sys
u, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
r = u["datapoints_per_s"] / t["datapoints_per_s"]
print(f"| {u['estimator']} | {u['k']} | {u['batch']} | {u['datapoints_per_s']:.1f} | {t['datapoints_per_s']:.1f} | {r:.2f}x |")
PY
done
# Evaluation: L_K on the first EVAL_IMAGES test images (fresh, untrained weights on both sides);
# the eval peer is the one-layer model's.
[ "$model" = vae ] || exit 0
eval_k=${EVAL_K:-5000}
eval_images=${EVAL_IMAGES:-100}
u=$("$uvae" bench --backend "$backend" --configs iwae:1:1 --steps 1 --repeats 1 --warmup 0 --eval-k "$eval_k" --eval-images "$eval_images" --json 2>/dev/null | tail -1)
t=$("$py" benches/torch_eval_peer.py --device "$torch_dev" --k "$eval_k" --images "$eval_images" | tail -1)
"$py" - "$u" "$t" <<'PY'
import json, sys
u, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
r = u["datapoints_per_s"] / t["datapoints_per_s"]
print(f"| eval L_{u['k']} ({u['images']} test images) | {u['k']} | - | {u['datapoints_per_s']:.2f} images/s | {t['datapoints_per_s']:.2f} images/s | {r:.2f}x |")
PY
