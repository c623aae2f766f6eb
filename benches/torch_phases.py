"""PyTorch's rate on the phases `uvae bench --phases` times: the one-layer decoder's GEMMs on
the same shapes (whole, as the peer runs them) and its elementwise passes, one JSON line per
phase with the same keys, so benches/phases.sh can set them side by side.

    python benches/torch_phases.py --rows 5000 --threads 2 [--flush-denormal]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def best_ms(f, repeats):
    f()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--flush-denormal", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(a.flush_denormal)
    g = torch.Generator().manual_seed(0)
    dims = [50, 200, 200, 784]
    rows = a.rows

    def emit(key, ms, flops=None, elems=None):
        print(json.dumps({
            "key": key, "threads": a.threads, "ms": ms,
            "gflops": flops / ms / 1e6 if flops else None,
            "gelems": elems / ms / 1e6 if elems else None,
            "peer": "pytorch-" + torch.__version__,
        }))

    with torch.no_grad():
        for din, dout in zip(dims, dims[1:]):
            x = torch.rand(rows, din, generator=g) - 0.5
            w = (torch.rand(dout, din, generator=g) - 0.5) * 0.1
            d = torch.rand(rows, dout, generator=g) - 0.5
            flops = 2.0 * rows * din * dout
            # nn.Linear's forward, its input gradient and its weight gradient.
            emit(f"gemm-forward-{din}x{dout}", best_ms(lambda: x @ w.t(), a.repeats), flops)
            emit(f"gemm-input-grad-{din}x{dout}", best_ms(lambda: d @ w, a.repeats), flops)
            emit(f"gemm-weight-grad-{din}x{dout}", best_ms(lambda: d.t() @ x, a.repeats), flops)
        h = torch.rand(rows, 200, generator=g) - 0.5
        b = torch.rand(200, generator=g) - 0.5
        emit("tanh", best_ms(lambda: torch.tanh(h + b), a.repeats), elems=rows * 200)
        emit("tanh-backward", best_ms(lambda: h * (1 - h * h), a.repeats), elems=rows * 200)
        logits = torch.rand(rows, 784, generator=g) * 8 - 4
        xb = (torch.rand(784, generator=g) > 0.7).float().expand(rows, 784)
        bias = torch.rand(784, generator=g) - 0.5

        def bernoulli():
            # The peer's likelihood and its gradient: BCE with logits summed per row, then
            # sigmoid(l) - x.
            l = logits + bias
            s = -F.binary_cross_entropy_with_logits(l, xb, reduction="none").sum(-1)
            return s, xb - torch.sigmoid(l)

        emit("bernoulli", best_ms(bernoulli, a.repeats), elems=rows * 784)
        scale = torch.rand(rows, 1, generator=g)
        emit("scale-rows", best_ms(lambda: scale * h, a.repeats), elems=rows * 200)
        emit("normals", best_ms(lambda: torch.randn(rows, 50), a.repeats), elems=rows * 50)
        src = torch.rand(rows, 784, generator=g)
        dst = torch.empty_like(src)
        emit("copy", best_ms(lambda: dst.copy_(src), a.repeats), elems=rows * 784)


if __name__ == "__main__":
    main()
