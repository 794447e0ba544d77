"""Throughput of `--backend ray`: 8 concurrent toy requests on 1 vs 2 CPU replicas.

    python bench/scaleout.py [--requests 8] [--steps 25] [--replicas 1 2] [--repeats 2]

Each replica runs one job at a time with one torch thread (a stand-in for one GPU each).
The requests are Text to image on the trained toy world (64 px), sent at once from 8
threads, as 8 visitors would through the UI's queue. Every replica first runs one job, so
model loading is not timed. Also timed: the same 8 requests one after another on the local
backend with one torch thread (what one replica costs without Ray).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from _common import median, table


def burst(run, n: int, steps: int) -> float:
    """Seconds until `n` concurrent requests have all finished."""
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            run({"prompt": "a red circle and a blue square", "seed": i, "steps": steps})
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import torch

    from studio.backend.serve import RayStudio
    from studio.backend.service import Studio
    from studio.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    base = dict(models="toy", offline=True, cache_dir=work / "cache",
                outputs_dir=work / "outputs", concepts_dir=work / "concepts")
    torch.set_num_threads(1)
    local = Studio(Settings(**base))
    local.txt2img({"prompt": "warm-up", "seed": 0, "steps": 2})
    t0 = time.perf_counter()
    for i in range(args.requests):
        local.txt2img({"prompt": "a red circle and a blue square", "seed": i,
                       "steps": args.steps})
    sequential = time.perf_counter() - t0
    rows = [["local backend, one after another", 1, f"{sequential:.1f}",
             f"{args.requests / sequential:.2f}", "-"]]
    first = None
    for n in args.replicas:
        studio = RayStudio(Settings(**base, backend="ray", replicas=n, replica_threads=1))
        try:
            burst(studio.txt2img, 2 * n, 2)  # every replica loads its models
            seconds = median([burst(studio.txt2img, args.requests, args.steps)
                              for _ in range(args.repeats)])
        finally:
            studio.close()
        first = first or args.requests / seconds
        rate = args.requests / seconds
        rows.append([f"ray, {n} replica(s)", n, f"{seconds:.1f}", f"{rate:.2f}",
                     f"{rate / first:.2f}x"])
        print(rows[-1], flush=True)
    print(f"\n{args.requests} concurrent toy txt2img requests, {args.steps} steps, 64 px, "
          "one torch thread per replica\n")
    print(table(rows, ["backend", "replicas", "seconds for all", "images/s",
                       "vs 1 replica"]))


if __name__ == "__main__":
    main()
