#!/usr/bin/env python3
"""PML's ranking-loss family, forward + backward, timed in CPU time of the
process (time.process_time) rather than wall time: on a machine shared with
other work the wall clock measures the neighbours too. The batches of
`../shared/bench/reference.py family` (N = 256 and 1024, D = 128, P x K labels
with K = 4, PML's defaults). Run with OMP_NUM_THREADS=1 beside
`RAYON_NUM_THREADS=1 FAMILY_CPU=1 cargo bench --bench family`.

    OMP_NUM_THREADS=1 ../ref-venv/bin/python benches/family_pml_cpu.py [N ...]
"""
import sys, time

import torch
from pytorch_metric_learning import losses, miners

torch.manual_seed(0)
FAMILY = [
    ("multi_similarity", lambda: losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5), None),
    ("multi_similarity_mined", lambda: losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5),
     lambda: miners.MultiSimilarityMiner(epsilon=0.1)),
    ("ntxent", lambda: losses.NTXentLoss(temperature=0.07), None),
    ("supcon", lambda: losses.SupConLoss(temperature=0.1), None),
    ("circle", lambda: losses.CircleLoss(m=0.4, gamma=80), None),
    ("lifted_structure", lambda: losses.LiftedStructureLoss(neg_margin=1, pos_margin=0), None),
    ("generalized_lifted_structure",
     lambda: losses.GeneralizedLiftedStructureLoss(neg_margin=1, pos_margin=0), None),
    ("npairs", lambda: losses.NPairsLoss(), None),
    ("margin", lambda: losses.MarginLoss(margin=0.2, nu=0, beta=1.2), None),
]
for n in [int(a) for a in sys.argv[1:]] or [256, 1024]:
    x = torch.randn(n, 128, requires_grad=True)
    labels = torch.arange(n) // 4
    for name, make_loss, make_miner in FAMILY:
        if name in ("ntxent", "lifted_structure") and n > 256:
            # PML's NT-Xent holds one row of negatives per positive pair: 21 GB and killed
            # for lack of memory here at N = 1024; its lifted structure loops in Python
            # over the positive pairs (4.7 CPU-seconds a call at N = 256)
            print(f"pml_cpu {name} n={n} skipped=too-large", flush=True)
            continue
        loss_fn, miner = make_loss(), (make_miner() if make_miner else None)

        def step():
            x.grad = None
            loss_fn(x, labels, miner(x, labels) if miner else None).backward()

        start = time.process_time()
        step()
        once = time.process_time() - start
        if once > 2.0:
            print(f"pml_cpu {name} n={n} cpu_ms={once * 1e3:.3f} calls=1", flush=True)
            continue
        calls, start = 0, time.process_time()
        while time.process_time() - start < 2.0:
            step()
            calls += 1
        per = (time.process_time() - start) / calls * 1e3
        print(f"pml_cpu {name} n={n} cpu_ms={per:.3f} calls={calls}", flush=True)
