"""Masked-diffusion sampling: ancestral vs first-hitting, model calls and wall time per sequence.

A small random-weights bidirectional transformer (plain JAX, time added to the token embedding)
stands in for a trained model; only the cost per call matters here. For 64-token sequences at
16, 64 and 256 steps it prints model calls and wall time per generated sequence of each sampler
and the first-hitting / ancestral ratios (both draw the same distribution for the same steps).

    python bench/discrete.py [--batch 8] [--width 128] [--layers 2] [--repeats 3]

Target (issue 4): at 256 steps first-hitting makes <= 64 model calls and takes <= 1/3 of the
ancestral wall time.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp

import diffjax.discrete as dd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402  (bench/results.py)

VOCAB, LENGTH = 27, 64


def init_transformer(key, vocab, length, width, layers, heads):
    keys = iter(jax.random.split(key, 4 + 6 * layers))

    def dense(shape):
        return jax.random.normal(next(keys), shape) / math.sqrt(shape[0])

    params = {
        "tok": jax.random.normal(next(keys), (vocab + 1, width)) * 0.02,
        "pos": jax.random.normal(next(keys), (length, width)) * 0.02,
        "time": dense((1, width)),
        "out": dense((width, vocab)),
        "layers": [
            {"qkv": dense((width, 3 * width)), "proj": dense((width, width)),
             "up": dense((width, 4 * width)), "down": dense((4 * width, width))}
            for _ in range(layers)
        ],
    }
    return params


def transformer(params, x, t, heads):
    def norm(h):
        return (h - h.mean(-1, keepdims=True)) * jax.lax.rsqrt(h.var(-1, keepdims=True) + 1e-6)

    h = params["tok"][x] + params["pos"][None] + (t[:, None, None] * params["time"][None])
    B, L, D = h.shape
    for lyr in params["layers"]:
        q, k, v = jnp.split(norm(h) @ lyr["qkv"], 3, axis=-1)
        q, k, v = (a.reshape(B, L, heads, D // heads) for a in (q, k, v))
        att = jax.nn.softmax(jnp.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(D // heads), axis=-1)
        h = h + jnp.einsum("bhlm,bmhd->blhd", att, v).reshape(B, L, D) @ lyr["proj"]
        h = h + jax.nn.gelu(norm(h) @ lyr["up"]) @ lyr["down"]
    return norm(h) @ params["out"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, nargs="+", default=[16, 64, 256])
    args = ap.parse_args()

    params = init_transformer(jax.random.PRNGKey(0), VOCAB, LENGTH, args.width, args.layers, args.heads)
    proc = dd.masked(VOCAB)

    def model_fn(x, t):
        return transformer(params, x, t, args.heads)

    def runner(method, steps):
        fn = jax.jit(lambda key: dd.sample(model_fn, key, (args.batch, LENGTH), process=proc, steps=steps,
                                           method=method))
        jax.block_until_ready(fn(jax.random.PRNGKey(123)))  # compile
        best, nfes = float("inf"), []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            x, info = jax.block_until_ready(fn(jax.random.PRNGKey(r)))
            best = min(best, time.perf_counter() - t0)
            nfes.append(int(info["nfe"]))
            assert int(jnp.sum(x == proc.mask_id)) == 0
        return sum(nfes) / len(nfes), max(nfes), best / args.batch

    print(f"device={jax.devices()[0].platform}  batch={args.batch}  length={LENGTH}  vocab={VOCAB}  "
          f"width={args.width}  layers={args.layers}  (best of {args.repeats} runs, after compilation)")
    print(f"{'steps':>5} | {'ancestral calls':>15} {'ms/seq':>8} | {'first-hit calls':>15} {'(max)':>5} {'ms/seq':>8}"
          f" | {'calls ratio':>11} {'time ratio':>10}")
    rows = []
    for steps in args.steps:
        a_calls, _, a_time = runner("ancestral", steps)
        f_calls, f_max, f_time = runner("first_hitting", steps)
        print(f"{steps:>5} | {a_calls:>15.1f} {1e3 * a_time:>8.2f} | {f_calls:>15.1f} {f_max:>5d} {1e3 * f_time:>8.2f}"
              f" | {f_calls / a_calls:>11.3f} {f_time / a_time:>10.3f}")
        rows.append(f"{steps} steps: calls {f_calls / a_calls:.3f}x, time {f_time / a_time:.3f}x")
    results.record("discrete", "first-hitting / ancestral sampler: " + "; ".join(rows))


if __name__ == "__main__":
    main()
