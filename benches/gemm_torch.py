#!/usr/bin/env python3
"""The shapes of benches/gemm.rs through torch (its CPU BLAS), in GFLOP/s, for
comparison with `cargo bench --bench gemm` at the same thread count:

    OMP_NUM_THREADS=2 ../ref-venv/bin/python benches/gemm_torch.py

Operands are stored as benches/gemm.rs stores them (A k x m when transposed,
B n x k when transposed) and handed to torch.mm as transposed views, which
torch passes to its BLAS as transpose flags (no copy). Each shape: the median
of 5 rounds (us, gflops) and the best round (best_gflops, what to set beside
`GEMM_TABLE=1 cargo bench --bench gemm` on a machine shared with other work).
"""
import time

import torch

SHAPES = [
    ("mlp_l1_fwd", 80, 256, 784, False, True),
    ("mlp_l1_wgrad", 256, 784, 80, True, False),
    ("mlp_l2_fwd", 80, 128, 256, False, True),
    ("mlp_l2_wgrad", 128, 256, 80, True, False),
    ("mlp_l2_igrad", 80, 256, 128, False, False),
    ("conv1_fwd", 80 * 26 * 26, 32, 9, False, True),
    ("conv1_wgrad", 32, 9, 80 * 26 * 26, True, False),
    ("conv2_fwd", 80 * 11 * 11, 64, 288, False, True),
    ("conv2_wgrad", 64, 288, 80 * 11 * 11, True, False),
    ("conv2_igrad", 80 * 11 * 11, 288, 64, False, False),
    ("conv1_img_fwd", 32, 26 * 26, 9, False, False),
    ("conv1_img_wgrad", 32, 9, 26 * 26, False, True),
    ("conv2_img_fwd", 64, 11 * 11, 288, False, False),
    ("conv2_img_wgrad", 64, 288, 11 * 11, False, True),
    ("conv2_img_igrad", 288, 11 * 11, 64, True, False),
    ("linear_1600", 80, 128, 1600, False, True),
    ("search", 2000, 8000, 128, False, True),
    ("gram_1024", 1024, 1024, 128, False, True),
    ("sx_1024", 1024, 128, 1024, False, False),
]


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, m, n, k, ta, tb in SHAPES:
        a = torch.rand(k, m).T if ta else torch.rand(m, k)
        b = torch.rand(n, k).T if tb else torch.rand(k, n)
        out = torch.empty(m, n)
        flops = 2 * m * n * k
        iters = max(3, int(2e9 / flops))
        for _ in range(3):
            torch.mm(a, b, out=out)
        rounds = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(iters):
                torch.mm(a, b, out=out)
            rounds.append((time.perf_counter() - t) / iters)
        median, best = sorted(rounds)[2], min(rounds)
        print(f"ref gemm_torch name={name} m={m} n={n} k={k} us={median * 1e6:.1f} "
              f"gflops={flops / median / 1e9:.1f} best_gflops={flops / best / 1e9:.1f}", flush=True)


if __name__ == "__main__":
    main()
