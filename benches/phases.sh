#!/usr/bin/env bash
# The CPU step's phases alone, uvae against PyTorch on the same shapes and threads: each
# decoder GEMM (uvae in the backend's pieces and in one call per worker), the elementwise
# passes, the noise and a copy, plus the 2048^3 peak line of each side. Prints a markdown
# table for BENCHMARKS.md.
#
#   PYTHON=/path/to/venv/bin/python benches/phases.sh          # ROWS (default 5000), THREADS
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
rows=${ROWS:-5000}
threads=${THREADS:-$(nproc)}
uvae=${UVAE:-target/release/uvae}
[ -x "$uvae" ] || cargo build --release --quiet
ours=$(mktemp)
theirs=$(mktemp)
trap 'rm -f "$ours" "$theirs"' EXIT
"$uvae" bench --configs none --eval-k 0 --gemm-peak 2048 --phases "$rows" --threads "$threads" --json >"$ours"
"$py" benches/torch_phases.py --rows "$rows" --threads "$threads" --flush-denormal >"$theirs"
"$py" - "$ours" "$theirs" "$threads" <<'PY'
import json, sys
from collections import defaultdict
ours = [json.loads(l) for l in open(sys.argv[1])]
theirs = {j["key"]: j for j in map(json.loads, open(sys.argv[2]))}
threads = int(sys.argv[3])
peak = next(j for j in ours if "gemm" in j and "key" not in j)
print(f"uvae: {peak['backend']}; peer: {next(iter(theirs.values()))['peer']} (flushed)")
print(f"uvae's sgemm on 2048^3: {peak['gflops']:.1f} GFLOP/s")
print()
rates = defaultdict(dict)  # key -> (threads, piece) -> row
order = []
for j in ours:
    if "key" not in j:
        continue
    if j["key"] not in order:
        order.append(j["key"])
    rates[j["key"]][(j["threads"], j["piece_rows"])] = j
def rate(j):
    return f"{j['gflops']:.1f} GFLOP/s" if j.get("gflops") else f"{j['gelems']:.2f} Gelem/s"
print(f"| phase | uvae {threads} threads, ms (pieces: rate) | uvae 1 thread, ms (backend's pieces) | {threads}-thread speed-up | PyTorch {threads} threads, ms (rate) | uvae / PyTorch |")
print("|---|---|---|---|---|---|")
for key in order:
    multi = sorted((p, j) for (t, p), j in rates[key].items() if t == threads)
    one = sorted((p, j) for (t, p), j in rates[key].items() if t == 1)
    cells = "; ".join(f"{p}: {j['ms']:.2f} ({rate(j)})" for p, j in multi)
    # The backend's own piece: the weight gradients sum 128 rows at a time, the rest use
    # the largest piece below one call per worker.
    backend = multi[0][1] if "weight-grad" in key or len(multi) == 1 else multi[1][1] if len(multi) > 2 else multi[-1][1]
    o = next((j for p, j in one if p == backend["piece_rows"]), one[0][1] if one else None)
    t = theirs.get(key)
    cells_one = f"{o['ms']:.2f}" if o else "-"
    speedup = f"{o['ms'] / backend['ms']:.2f}x" if o else "-"
    tcell = f"{t['ms']:.2f} ({rate(t)})" if t else "-"
    ratio = f"{t['ms'] / backend['ms']:.2f}x" if t else "-"
    print(f"| {key} | {cells} | {cells_one} | {speedup} | {tcell} | {ratio} |")
print()
print("uvae / PyTorch and the speed-up are set on the backend's own piece size (128 rows for the weight gradients, 512 otherwise); best of 5 each")
PY
