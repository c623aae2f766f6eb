#!/usr/bin/env python3
"""Peer benchmark for the two-stochastic-layer VAE (`uvae --model hvae`): the same training
step in PyTorch, built like ../shared/peers/torch_iwae_bench.py (the one-layer peer).

Model (Burda et al. 2016, two layers): q(z1|x) 784-200-200 tanh -> 100 + 100,
q(z2|z1) 100-100-100 tanh -> 50 + 50, p(z1|z2) 50-100-100 tanh -> 100 + 100,
p(x|z1) 100-200-200 tanh -> 784 Bernoulli logits, p(z2) = N(0, I). Dynamic binarization,
Adam lr 1e-3, estimators iwae or elbo. The modules carry uvae's checkpoint names
(encoder, encoder2, decoder2, decoder: nn.Sequential, Linear layers at even indices), so
`model.load_state_dict(safetensors.torch.load_file("checkpoint.safetensors"))` loads a uvae
checkpoint as it is. Prints one JSON line: datapoints per second of training steps.

  python3 benches/torch_hvae_peer.py --device cpu --k 50 --batch 100 --steps 20
  python3 benches/torch_hvae_peer.py --device cpu --flush-denormal --compile

--flush-denormal and --compile act as in the one-layer peer: denormals flushed to zero
(torch.set_flush_denormal), and the forward pass (sampling, the four MLPs, the log-weights)
compiled with torch.compile.
"""
import argparse, gzip, json, os, struct, time
import numpy as np
import torch
import torch.nn as nn

LOG_2PI = float(np.log(2 * np.pi))


def load_mnist(path):
    with gzip.open(path, "rb") as f:
        magic, n, r, c = struct.unpack(">IIII", f.read(16))
        assert magic == 2051
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, r * c)


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def log_normal(z, mu, logsig):
    return (-0.5 * ((z - mu) / logsig.exp()) ** 2 - logsig - 0.5 * LOG_2PI).sum(-1)


class HVAE(nn.Module):
    def __init__(self, d=784, h1=200, z1=100, h2=100, z2=50):
        super().__init__()
        self.encoder = mlp([d, h1, h1, 2 * z1])
        self.encoder2 = mlp([z1, h2, h2, 2 * z2])
        self.decoder2 = mlp([z2, h2, h2, 2 * z1])
        self.decoder = mlp([z1, h1, h1, d])

    def log_weights(self, x, k):
        mu1, ls1 = self.encoder(x).chunk(2, -1)
        e1 = torch.randn(k, *mu1.shape, device=x.device)
        z1 = mu1 + ls1.exp() * e1
        mu2, ls2 = self.encoder2(z1).chunk(2, -1)
        z2 = mu2 + ls2.exp() * torch.randn_like(mu2)
        pm, pls = self.decoder2(z2).chunk(2, -1)
        logits = self.decoder(z1)
        log_px = -nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand(k, *x.shape), reduction="none").sum(-1)
        log_pz2 = (-0.5 * z2 ** 2 - 0.5 * LOG_2PI).sum(-1)
        return (log_px + log_normal(z1, pm, pls) + log_pz2
                - log_normal(z1, mu1, ls1) - log_normal(z2, mu2, ls2))  # [k, batch]


def step_loss(model, x, k, estimator):
    lw = model.log_weights(x, k)
    if estimator == "elbo":
        return -lw.mean()
    return -(torch.logsumexp(lw, 0) - np.log(k)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--estimator", default="iwae", choices=["elbo", "iwae"])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "assets", "mnist", "train-images-idx3-ubyte.gz"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward pass (log-weights)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.flush_denormal and not torch.set_flush_denormal(True):
        raise SystemExit("this CPU cannot flush denormals")
    torch.manual_seed(0)
    dev = torch.device(a.device)
    imgs = torch.from_numpy(load_mnist(a.data).astype(np.float32) / 255.0).to(dev)
    model = HVAE().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = imgs.shape[0]
    if a.compile:
        model.log_weights = torch.compile(model.log_weights)

    def one():
        idx = torch.randint(0, n, (a.batch,), device=dev)
        x = torch.bernoulli(imgs[idx])
        opt.zero_grad(set_to_none=True)
        step_loss(model, x, a.k, a.estimator).backward()
        opt.step()

    for _ in range(a.warmup):
        one()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps):
        one()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    el = time.perf_counter() - t
    print(json.dumps({"peer": "pytorch-" + torch.__version__, "device": str(dev), "threads": torch.get_num_threads(),
                      "model": "hvae", "estimator": a.estimator, "k": a.k, "batch": a.batch, "steps": a.steps,
                      "flush_denormal": a.flush_denormal, "compile": a.compile,
                      "seconds": round(el, 4), "datapoints_per_s": round(a.steps * a.batch / el, 1)}))


if __name__ == "__main__":
    main()
