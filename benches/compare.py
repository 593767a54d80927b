#!/usr/bin/env python3
"""Side-by-side speed: ../shared/bench/reference.py (PyTorch, PML, faiss) and
this project's criterion benches, in one run, same thread count. Prints one
markdown table with ratios (project time / reference time).

    python3 benches/compare.py [--python ../ref-venv/bin/python] [--threads 2]
                               [--only all|losses|search|gemm|family]

`--only family` runs `reference.py family` (PML's ranking-loss family,
N = 256 and 1024, D = 128) and `cargo bench --bench family` back to back.
`--only search` runs `reference.py search` (faiss IndexFlatL2 build + search,
torch cdist + topk) and `cargo bench --bench search` back to back. `--only
gemm` runs `benches/gemm_torch.py` and `cargo bench --bench gemm` (the
project's GEMM and the `gemm` crate on its callers' shapes) and prints
GFLOP/s.

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
    ap.add_argument("--only", choices=["all", "losses", "search", "gemm", "family", "xbm"], default="all",
                    help="losses: the loss benches and the training step; search: exact k-NN "
                         "and retrieval_metrics against faiss and torch; gemm: the GEMM's shapes "
                         "against torch.mm and the gemm crate; family: the ranking-loss family "
                         "against PML; xbm: cross-batch memory (batch 80, memory 1024) against "
                         "PML's CrossBatchMemory")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc settings on both sides (by default both sides keep "
                         "freed memory: see metric_loss::allocator)")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=args.threads, MKL_NUM_THREADS=args.threads,
               RAYON_NUM_THREADS=args.threads)
    if args.default_malloc:
        env["DEFAULT_MALLOC"] = "1"
    else:
        # the settings of metric_loss::allocator::keep_freed_memory, for every
        # process of both sides alike
        env["GLIBC_TUNABLES"] = ("glibc.malloc.mmap_threshold=33554432:"
                                 "glibc.malloc.trim_threshold=2000000000")

    rows, notes = [], []
    for part, make in [("search", search_rows), ("losses", loss_rows), ("gemm", gemm_rows),
                       ("family", family_rows), ("xbm", xbm_rows)]:
        if args.only in ("all", part):
            r, n = make(args, env)
            rows += r
            notes += n
    print(f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads each side.\n")
    print("| work | metric-loss (us) | reference | reference (us) | ratio |")
    print("|---|---:|---|---:|---:|")
    for work, ours, who, theirs in rows:
        print(f"| {work} | {ours:.1f} | {who} | {theirs:.1f} | {ours / theirs:.2f} |")
    print()
    for note in notes:
        print(note)


def read_ref(out):
    ref = {}
    for line in out.splitlines():
        m = re.match(r"ref (\S+) (.*)", line)
        if m:
            kv = dict(p.split("=") for p in m.group(2).split())
            ref[(m.group(1), kv.get("n") or kv.get("encoder") or kv.get("name"))] = kv
    return ref


# retrieval_metrics on 2,000 x 8,000 x 128 before it was built on the index
# (issue 14's measurement; the old code is gone, so it is not re-run here).
RETRIEVAL_BEFORE_US = 409_000.0


def search_rows(args, env):
    """Exact k-NN of 2,000 queries against 8,000 references, D = 128, k = 10:
    build + search, against faiss IndexFlatL2 and torch cdist + topk."""
    ref = read_ref(run([args.python, args.reference, "search"], env))
    print(ref, file=sys.stderr)
    run(["cargo", "bench", "--bench", "search", "--", "--noplot"], env)
    faiss_us = float(ref[("knn_faiss", None)]["us"])
    torch_us = float(ref[("knn_torch", None)]["us"])
    rows = []
    for metric in ["squared_euclidean", "euclidean", "cosine", "dot"]:
        ours = criterion_us("search", f"{metric}_2000x8000x128_k10")
        rows.append((f"exact k-NN 2000 x 8000 x 128, k = 10, build + search ({metric})", ours,
                     "faiss IndexFlatL2", faiss_us))
    ours = criterion_us("search", "squared_euclidean_2000x8000x128_k10")
    rows.append(("exact k-NN 2000 x 8000 x 128, k = 10 (squared_euclidean)", ours,
                 "torch cdist + topk", torch_us))
    rows.append(("retrieval_metrics 2000 x 8000 x 128", criterion_us("retrieval_metrics", "2000x8000x128"),
                 "before the index (issue 14, not re-run)", RETRIEVAL_BEFORE_US))
    notes = [f"Search arithmetic: 2 x 2000 x 8000 x 128 = 4.1 GFLOP; faiss ran it at "
             f"{4.096e9 / faiss_us / 1e3:.1f} GFLOP/s, metric-loss (squared_euclidean) at "
             f"{4.096e9 / ours / 1e3:.1f} GFLOP/s."]
    return rows, notes


def xbm_rows(args, env):
    """Cross-batch memory, the loss part of a step: batch 80 (5 x 16) against a
    full memory of 1024, D = 128, multi-similarity, forward + backward. PML's row
    (`reference.py family`) has no miner (every pair); ours is timed both ways."""
    out = run([args.python, args.reference, "family"], env)
    print(out, file=sys.stderr)
    ref = read_ref(out)
    pml = float(ref[("xbm_multi_similarity_pml", None)]["us"])
    run(["cargo", "bench", "--bench", "xbm", "--", "--noplot"], env)
    rows = [
        ("XBM multi-similarity, batch 80, memory 1024, every pair",
         criterion_us("xbm", "multi_similarity_80x1024"), "PML", pml),
        ("XBM multi-similarity + its miner, batch 80, memory 1024",
         criterion_us("xbm", "multi_similarity_miner_80x1024"), "PML (every pair)", pml),
    ]
    return rows, ["PML's XBM row has no miner; the miner row is compared with it for scale only."]


def loss_rows(args, env):
    out = run([args.python, args.reference, "losses"], env)
    out += run([args.python, args.reference, "steps"], env)
    out += run([args.python, args.reference, "mnist", str(ROOT / "data"), args.mnist_epochs], env)
    out += run([args.python, args.reference, "steps"], env)
    print(out, file=sys.stderr)
    ref = read_ref(out)

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
    torch_step = float(ref[("train_step_torch", "mlp")]["us"])
    for name, bench in [("dfdx `Linear`s", "train_step_80"),
                        ("`InputLinear`, `FusedLinear` (the examples')", "train_step_fused_80")]:
        rows.append((f"MLP training step (batch 80), {name}", criterion_us(bench, ""),
                     "PyTorch", torch_step))
    rows.append(("MNIST training step (batch 80), reference.py's CNN", criterion_us("train_step_cnn_80", ""),
                 "PyTorch", float(ref[("train_step_torch", "cnn")]["us"])))

    notes = []
    for n in ["256", "1024"]:
        ours = criterion_us("losses", "batch_hard", n)
        notes.append(f"Floor at N={n}: one {n} x {n} x 128 GEMM through torch takes {floor[n]:.1f} us; "
                     f"batch-hard forward + backward here takes {ours / floor[n]:.2f} x that.")
    return rows, notes


# (bench name in benches/family.rs, reference.py family's name): reference.py's
# `lifted_structure` is PML's GeneralizedLiftedStructureLoss.
FAMILY = [
    ("multi_similarity", "multi_similarity_pml"),
    ("multi_similarity_mined", "multi_similarity_mined_pml"),
    ("ntxent", "ntxent_pml"),
    ("supcon", "supcon_pml"),
    ("circle", "circle_pml"),
    ("generalized_lifted_structure", "lifted_structure_pml"),
    ("margin", "margin_pml"),
]


def family_rows(args, env):
    """The ranking family, forward + backward, N = 256 and 1024, D = 128,
    P x K labels (K = 4), PML's defaults, all pairs unless a miner is named."""
    ref = read_ref(run([args.python, args.reference, "family"], env))
    print(ref, file=sys.stderr)
    run(["cargo", "bench", "--bench", "family", "--", "--noplot"], env)
    rows, notes = [], []
    for n in ["256", "1024"]:
        for ours_name, ref_name in FAMILY:
            kv = ref.get((ref_name, n))
            if kv is None or "us" not in kv:
                notes.append(f"{ref_name} n={n}: PML {kv.get('skipped', 'not run') if kv else 'not run'}")
                continue
            who = "PML" + (" (one call)" if kv.get("calls") == "1" else "")
            rows.append((f"{ours_name} N={n}", criterion_us("family", ours_name, n), who,
                         float(kv["us"])))
    return rows, notes


def gemm_rows(args, env):
    """The project's GEMM on its callers' shapes (benches/gemm.rs) beside the
    gemm crate and torch.mm: a GFLOP/s table, as notes."""
    ref = read_ref(run([args.python, str(ROOT / "benches" / "gemm_torch.py")], env))
    run(["cargo", "bench", "--bench", "gemm", "--", "--noplot", "gemm/"], env)
    notes = ["| GEMM | m x n x k | ours GFLOP/s | `gemm` crate GFLOP/s | torch GFLOP/s |",
             "|---|---|---:|---:|---:|"]
    for (who, name), kv in ref.items():
        if who != "gemm_torch":
            continue
        m, n, k = int(kv["m"]), int(kv["n"]), int(kv["k"])
        flop = 2 * m * n * k / 1e3  # per us -> GFLOP/s
        ours = flop / criterion_us("gemm", "ours", name)
        crate = flop / criterion_us("gemm", "gemm_crate", name)
        notes.append(f"| {name} | {m} x {n} x {k} | {ours:.1f} | {crate:.1f} | {float(kv['gflops']):.1f} |")
    return [], notes


if __name__ == "__main__":
    main()
