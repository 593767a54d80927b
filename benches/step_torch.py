#!/usr/bin/env python3
"""PyTorch's MLP or CNN training step of `../shared/bench/reference.py steps`, each
step timed alone, 300 times after 20 to warm up: the best and the first
quartile, to set beside `STEP_TABLE=1 cargo bench --bench losses` on a machine
shared with other work (reference.py's median of 3 rounds measures the
neighbours too).

    OMP_NUM_THREADS=1 ../ref-venv/bin/python benches/step_torch.py [--encoder mlp|cnn] [--reference PATH]

It also prints the process's CPU time per step over the 300 (user + system,
all threads): on a loaded machine, the work a step costs.

Like our side (`metric_loss::allocator::keep_freed_memory`, which the step
bench calls), it first tells glibc's malloc to keep freed memory for the next
step (mmap threshold 32 MiB, trim threshold 2 GB), so neither side pays a
page fault per 4 KiB of its buffers every step; `--default-malloc` leaves
glibc's settings.
"""
import argparse, ctypes, ctypes.util, importlib.util, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

F = torch.nn.functional


def batch_hard(e, y, m=0.2):
    # reference.py steps' loss, as written there
    e = F.normalize(e)
    d = torch.cdist(e, e)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    hp = d.masked_fill(~same | eye, -1).max(1).values
    hn = d.masked_fill(same, 1e9).min(1).values
    return F.relu(hp - hn + m).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--reference", default=str(ROOT.parent / "shared" / "bench" / "reference.py"))
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc settings (no mallopt)")
    args = ap.parse_args()
    if not args.default_malloc:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        assert libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
        assert libc.mallopt(M_TRIM_THRESHOLD, 2_000_000_000) == 1
    spec = importlib.util.spec_from_file_location("reference", args.reference)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)  # its encoders: the step's model
    torch.manual_seed(0)
    model = reference.mlp() if args.encoder == "mlp" else reference.cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    shape = (80, 784) if args.encoder == "mlp" else (80, 1, 28, 28)
    x, y = torch.rand(*shape), torch.arange(80) // 16

    def step():
        opt.zero_grad()
        batch_hard(model(x), y).backward()
        opt.step()

    ms = []
    for i in range(320):
        if i == 20:
            cpu = time.process_time()
        t = time.perf_counter()
        step()
        if i >= 20:
            ms.append((time.perf_counter() - t) * 1e3)
    cpu_ms = (time.process_time() - cpu) * 1e3 / len(ms)
    ms.sort()
    print(f"ref train_step_torch_best encoder={args.encoder} batch=80 threads={torch.get_num_threads()} "
          f"best_ms={ms[0]:.2f} q1_ms={ms[len(ms) // 4]:.2f} cpu_ms={cpu_ms:.2f} "
          f"malloc={'default' if args.default_malloc else 'kept'}")


if __name__ == "__main__":
    main()
