#!/usr/bin/env python3
"""faiss `IndexFlatL2` build + search of `../shared/bench/reference.py search`
(2,000 random queries, 8,000 references, D = 128, k = 10), each call timed
alone, 30 times: the best and first-quartile wall time and the least process
CPU time per call, to set beside `SEARCH_TABLE=1 cargo bench --bench search`
on a machine shared with other work.

    OMP_NUM_THREADS=1 ../ref-venv/bin/python benches/search_faiss.py
"""
import time

import faiss
import torch


def main():
    torch.manual_seed(0)
    q = torch.randn(2000, 128).numpy()
    r = torch.randn(8000, 128).numpy()

    def call():
        index = faiss.IndexFlatL2(128)
        index.add(r)
        return index.search(q, 10)

    call()
    wall, cpu = [], []
    for _ in range(30):
        t, c = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    wall.sort()
    cpu.sort()
    print(f"| faiss IndexFlatL2, {faiss.omp_get_max_threads()} threads | {wall[0]:.1f} | "
          f"{wall[len(wall) // 4]:.1f} | {cpu[0]:.1f} |")


if __name__ == "__main__":
    main()
