#!/usr/bin/env bash
# uvae against the PyTorch peer (../shared/peers/torch_iwae_bench.py) on the same machine, as
# ratios. The peer runs three ways: as shipped, with --flush-denormal, and with
# --flush-denormal --compile (torch.compile'd forward). Each round runs uvae once and then each
# peer variant once, so slow drifts of a shared machine touch both sides alike; a ratio is the
# median over rounds of uvae's rate over the peer's in the same round. Both sides train
# WARMUP steps before timing (the steady state). The table names the CPU and vector paths, and
# a peak line gives the best sgemm rate on a 2048^3 square through PyTorch and through uvae's
# own GEMM: the denominators of every phase's GFLOP/s in `uvae profile`.
#
#   PYTHON=/path/to/venv/bin/python benches/compare_peer.sh cpu      # CPU backend vs torch cpu
#   PYTHON=... benches/compare_peer.sh gpu                          # GPU backend vs torch cuda
#   MODEL=hvae PYTHON=... benches/compare_peer.sh cpu               # the two-layer model, against
#                                                                   # benches/torch_hvae_peer.py
#
# PYTHON must have torch and numpy. STEPS (timed steps per run; 10x for K <= 5), ROUNDS,
# WARMUP (default 200), THREADS (default: all cores) and VARIANTS (a subset of
# "shipped flushed compiled") tune it; EVAL=0 skips the evaluation row.
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
rounds=${ROUNDS:-5}
warmup=${WARMUP:-200}
threads=${THREADS:-$(nproc)}
variants=${VARIANTS:-shipped flushed compiled}
uvae=${UVAE:-target/release/uvae}
[ -x "$uvae" ] || cargo build --release --quiet
case $device in
  cpu) backend=cpu; torch_dev=cpu ;;
  gpu) backend=gpu; torch_dev=cuda ;;
  *) echo "usage: $0 cpu|gpu" >&2; exit 2 ;;
esac
flags_of() {
  case $1 in
    shipped) echo "" ;;
    flushed) echo "--flush-denormal" ;;
    compiled) echo "--flush-denormal --compile" ;;
    *) echo "VARIANTS: unknown variant '$1' (shipped, flushed, compiled)" >&2; exit 2 ;;
  esac
}
for v in $variants; do flags_of "$v" >/dev/null; done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$log"; } # key, side, JSON line

# The peak line: uvae's GEMM, then PyTorch's, on the same square and threads.
u=$("$uvae" bench --configs none --eval-k 0 --gemm-peak 2048 --threads "$threads" --json 2>/dev/null | tail -1)
record peak uvae "$u"
t=$("$py" - "$threads" <<'PY'
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
n = 2048
a, b = torch.randn(n, n), torch.randn(n, n)
a @ b
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"gflops": 2 * n**3 / best / 1e9, "peer": "pytorch-" + torch.__version__}))
PY
)
record peak peer "$t"

# uvae name : peer name : k : batch
for cfg in $cfgs; do
  IFS=: read -r ours theirs k batch <<<"$cfg"
  n=$steps; [ "$k" -le 5 ] && n=$((steps * 10))
  for r in $(seq "$rounds"); do
    u=$("$uvae" bench --backend "$backend" --model "$model" --configs "$ours:$k:$batch" --steps "$n" --repeats 1 --warmup "$warmup" --threads "$threads" --eval-k 0 --json 2>/dev/null | tail -1)
    record "$cfg" uvae "$u"
    for v in $variants; do
      # The bundled MNIST: the peer's own default path (../data beside it) exists only beside
      # ../shared, not on a device machine.
      # shellcheck disable=SC2046
      t=$("$py" "$peer" --device "$torch_dev" --estimator "$theirs" --k "$k" --batch "$batch" --steps "$n" --warmup "$warmup" --threads "$threads" $(flags_of "$v") --data assets/mnist/train-images-idx3-ubyte.gz | tail -1)
      record "$cfg" "$v" "$t"
    done
  done
done
# Evaluation: L_K on the first EVAL_IMAGES test images (fresh, untrained weights on both
# sides); the eval peer is the one-layer model's and has no compiled variant.
if [ "$model" = vae ] && [ "${EVAL:-1}" != 0 ]; then
  eval_k=${EVAL_K:-5000}
  eval_images=${EVAL_IMAGES:-100}
  for r in $(seq "$rounds"); do
    u=$("$uvae" bench --backend "$backend" --configs none --eval-k "$eval_k" --eval-images "$eval_images" --threads "$threads" --json 2>/dev/null | tail -1)
    record eval uvae "$u"
    for v in $variants; do
      [ "$v" = compiled ] && continue
      # shellcheck disable=SC2046
      t=$("$py" benches/torch_eval_peer.py --device "$torch_dev" --k "$eval_k" --images "$eval_images" --threads "$threads" $(flags_of "$v") | tail -1)
      record eval "$v" "$t"
    done
  done
fi
field() { grep -m1 "^$1" /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true; }
cpu="$(field 'model name') (family $(field 'cpu family') model $(field 'model	'))"
"$py" - "$log" "${cpu:-unknown CPU}" "$variants" <<'PY'
import json, statistics, sys
from collections import defaultdict
path, cpu, variants = sys.argv[1], sys.argv[2], sys.argv[3].split()
runs = defaultdict(lambda: defaultdict(list))  # key -> side -> [json]
order = []
for line in open(path):
    key, side, js = line.rstrip("\n").split("\t", 2)
    if key not in order:
        order.append(key)
    runs[key][side].append(json.loads(js))
peak = runs.pop("peak")
order.remove("peak")
u_peak, t_peak = peak["uvae"][0], peak["peer"][0]
backend = u_peak["backend"]
print(f"CPU: {cpu}; uvae: {backend}; peer: {t_peak['peer']}")
print(f"peak (sgemm 2048^3, {u_peak['threads']} threads): PyTorch {t_peak['gflops']:.1f} GFLOP/s, uvae's GEMM {u_peak['gflops']:.1f} GFLOP/s ({u_peak['gflops'] / t_peak['gflops']:.0%})")
print()
names = {"shipped": "as shipped", "flushed": "flushed", "compiled": "flushed + compiled"}
head = "| config | uvae datapoints/s |" + "".join(f" PyTorch {names[v]} | ratio |" for v in variants)
print(head)
print("|" + "---|" * (2 + 2 * len(variants)))
for key in order:
    sides = runs[key]
    u = [j["datapoints_per_s"] for j in sides["uvae"]]
    if key == "eval":
        label = f"eval L_{sides['uvae'][0]['k']}, {sides['uvae'][0]['images']} images (images/s)"
    else:
        ours, theirs, k, batch = key.split(":")
        label = f"{ours} K={k} B={batch}"
    cells = f"| {label} | {statistics.median(u):.1f} ({min(u):.0f}..{max(u):.0f}) |"
    for v in variants:
        if v not in sides:
            cells += " - | - |"
            continue
        t = [j["datapoints_per_s"] for j in sides[v]]
        ratios = [a / b for a, b in zip(u, t)]
        cells += f" {statistics.median(t):.1f} ({min(t):.0f}..{max(t):.0f}) | {statistics.median(ratios):.2f}x |"
    print(cells)
print()
print(f"medians over {len(u)} alternated rounds (range in brackets); a ratio is the median of the rounds' ratios")
PY
