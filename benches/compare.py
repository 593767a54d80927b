#!/usr/bin/env python3
"""Side-by-side speed: ../shared/bench/reference.py (PyTorch, PML) and this
project's criterion benches, in one run, same thread count. Prints one
markdown table with ratios (project time / reference time).

    python3 benches/compare.py [--python ../ref-venv/bin/python] [--threads 2]

The reference needs torch and pytorch-metric-learning (see reference.py's
set-up line); it is a large download, so this is never run in CI.
"""
import argparse, datetime, json, os, platform, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd, env):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout


FLOOR = """
import time, torch
for n in (256, 1024):
    x = torch.randn(n, 128)
    for _ in range(20):
        x @ x.T
    best = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(200):
            x @ x.T
        best.append((time.perf_counter() - t) / 200 * 1e6)
    print(n, sorted(best)[1])
"""


def criterion_us(group, name, n=None):
    path = ROOT / "target" / "criterion" / group
    if name:
        path = path / name
    if n is not None:
        path = path / str(n)
    est = json.loads((path / "new" / "estimates.json").read_text())
    return est["median"]["point_estimate"] / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=str(ROOT.parent / "ref-venv" / "bin" / "python"))
    ap.add_argument("--reference", default=str(ROOT.parent / "shared" / "bench" / "reference.py"))
    ap.add_argument("--threads", default="2")
    ap.add_argument("--mnist-epochs", default="2")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=args.threads, MKL_NUM_THREADS=args.threads,
               RAYON_NUM_THREADS=args.threads)

    ref = {}
    out = run([args.python, args.reference, "losses"], env)
    out += run([args.python, args.reference, "mnist", str(ROOT / "data"), args.mnist_epochs], env)
    print(out, file=sys.stderr)
    for line in out.splitlines():
        m = re.match(r"ref (\S+) (.*)", line)
        if m:
            kv = dict(p.split("=") for p in m.group(2).split())
            ref[(m.group(1), kv.get("n"))] = kv

    # The floor named in the issue: one N x N x D GEMM through torch.
    floor = {}
    for line in run([args.python, "-c", FLOOR], env).splitlines():
        n, us = line.split()
        floor[n] = float(us)

    run(["cargo", "bench", "--bench", "losses", "--", "--noplot"], env)

    rows = []
    for n in ["64", "256", "1024"]:
        ours = criterion_us("losses", "batch_hard", n)
        rows.append((f"batch-hard N={n}", ours, "PyTorch", float(ref[("batch_hard_torch", n)]["us"])))
        rows.append((f"batch-hard N={n}", ours, "PML", float(ref[("batch_hard_pml", n)]["us"])))
        rows.append((f"explicit triplet N={n}", criterion_us("losses", "triplet_explicit", n),
                     "PyTorch", float(ref[("triplet_explicit_torch", n)]["us"])))
        rows.append((f"contrastive pairs N={n}", criterion_us("losses", "contrastive_pairs", n),
                     "PyTorch", float(ref[("contrastive_pairs_torch", n)]["us"])))
    pml_step = float(ref[("mnist_triplet_batch_hard", None)]["ms_per_step"]) * 1e3
    rows.append(("MNIST training step (batch 80), dfdx `Linear` first", criterion_us("train_step_80", ""),
                 "PML", pml_step))
    rows.append(("MNIST training step (batch 80), `InputLinear` first",
                 criterion_us("train_step_input_linear_80", ""), "PML", pml_step))

    print(f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads each side.\n")
    print("| work | metric-loss (us) | reference | reference (us) | ratio |")
    print("|---|---:|---|---:|---:|")
    for work, ours, who, theirs in rows:
        print(f"| {work} | {ours:.1f} | {who} | {theirs:.1f} | {ours / theirs:.2f} |")
    print()
    for n in ["256", "1024"]:
        ours = criterion_us("losses", "batch_hard", n)
        print(f"Floor at N={n}: one {n} x {n} x 128 GEMM through torch takes {floor[n]:.1f} us; "
              f"batch-hard forward + backward here takes {ours / floor[n]:.2f} x that.")


if __name__ == "__main__":
    main()
