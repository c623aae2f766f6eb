#!/usr/bin/env python3
"""Evaluation throughput of the PyTorch peer: L_K on the first N test images, with the peer
benchmark's own model (imported from ../shared/peers/torch_iwae_bench.py, not copied),
binarized test images, samples in chunks so memory stays bounded. Prints one JSON line.

  python3 benches/torch_eval_peer.py --device cpu --k 5000 --images 100
"""
import argparse, gzip, json, math, os, struct, sys, time

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
peers = os.environ.get("PEERS", os.path.join(here, "..", "..", "shared", "peers"))
sys.path.insert(0, peers)
from torch_iwae_bench import VAE  # noqa: E402


def load_images(path):
    with gzip.open(path, "rb") as f:
        magic, n, r, c = struct.unpack(">IIII", f.read(16))
        assert magic == 2051
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, r * c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=16384, help="sample rows per forward pass")
    ap.add_argument("--data", default=os.path.join(here, "..", "assets", "mnist", "t10k-images-idx3-ubyte.gz"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.flush_denormal and not torch.set_flush_denormal(True):
        raise SystemExit("this CPU cannot flush denormals")
    torch.manual_seed(0)
    dev = torch.device(a.device)
    x = torch.from_numpy(load_images(a.data)[: a.images].astype(np.float32) / 255.0).to(dev)
    x = torch.bernoulli(x)
    model = VAE().to(dev)
    per_chunk = max(1, a.chunk // a.k) if a.k <= a.chunk else 1
    k_chunk = min(a.k, a.chunk)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    values = []
    with torch.no_grad():
        for b0 in range(0, a.images, per_chunk):
            xb = x[b0 : b0 + per_chunk]
            parts = []
            for s0 in range(0, a.k, k_chunk):
                parts.append(model.log_weights(xb, min(k_chunk, a.k - s0)))  # [k, batch]
            lw = torch.cat(parts, 0)
            values.append(torch.logsumexp(lw, 0) - math.log(a.k))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    el = time.perf_counter() - t
    lk = torch.cat(values).mean().item()
    print(json.dumps({"peer": "pytorch-" + torch.__version__, "device": str(dev), "threads": torch.get_num_threads(), "k": a.k,
                      "images": a.images, "flush_denormal": a.flush_denormal, "seconds": round(el, 4), "datapoints_per_s": round(a.images / el, 2), "mean_lk": lk}))


if __name__ == "__main__":
    main()
