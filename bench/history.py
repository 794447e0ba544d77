"""Speed of the history index (`/history`, the Outputs tab) at 10,000 saved images.

    python bench/history.py [--images 10000] [--days 50] [--repeats 20]

Creates `--images` small PNGs through `OutputStore.save` itself (the same metadata chunks as
real outputs; fsync switched off while creating, to make it quick), spread over `--days` day
folders with increasing modification times, then times: the first indexing, an unchanged
call, a call after one new image, the restart of the index on the same folder, a text query,
a deep page (offset 9,000) and the count the Outputs tab shows. `--days 1` is the worst case
for new images: the one folder holding them all is re-listed after every new image.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from _common import median, table, timed

COLOURS = ["red", "green", "blue", "yellow", "purple"]
SHAPES = ["circle", "square", "triangle"]
TASKS = ["txt2img", "control", "layout", "inpaint", "instruct"]


def create(root: Path, images: int, days: int) -> float:
    """Save `images` PNGs into `days` day folders; returns the seconds it took."""
    from PIL import Image

    from studio.backend.outputs import OutputStore

    rng = random.Random(0)
    store = OutputStore(root)
    start, real_fsync = time.perf_counter(), os.fsync
    os.fsync = lambda fd: None  # creation speed only; the studio's own saves fsync
    try:
        now = time.time()
        for i in range(images):
            day = i * days // images
            folder = root / f"2025-{1 + day // 28:02d}-{1 + day % 28:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            store._day = lambda folder=folder: folder  # type: ignore[method-assign]
            prompt = (f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} and a "
                      f"{rng.choice(COLOURS)} {rng.choice(SHAPES)}")
            path = store.save(Image.new("RGB", (8, 8), tuple(rng.randrange(256) for _ in "rgb")),
                              {"task": rng.choice(TASKS), "prompt": prompt, "seed": i,
                               "steps": 25, "width": 512, "height": 512}, "sd15:bench")
            stamp = now - (images - i) * 60.0
            os.utime(path, (stamp, stamp))
    finally:
        os.fsync = real_fsync
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    from PIL import Image

    from studio.backend.history import HistoryIndex, Page
    from studio.backend.outputs import OutputStore

    root = Path(tempfile.mkdtemp(prefix="bench-history-"))
    made_s = create(root, args.images, args.days)
    index = HistoryIndex(root)
    ms = lambda xs: f"{1000 * median(xs):.1f}"  # noqa: E731
    rows = [[f"create {args.images} outputs ({args.days} day folders)", f"{made_s * 1000:.0f}",
             "once"]]
    rows.append(["first indexing (reads every file's metadata)",
                 ms(timed(lambda: index.query(Page()), 1)), "once"])
    time.sleep(2.1)  # folders written in the last 2 s are listed again (coarse timestamps)
    index.query(Page())
    rows.append(["/history, nothing changed (limit 50)",
                 ms(timed(lambda: index.query(Page()), args.repeats)), args.repeats])
    store, newest = OutputStore(root), sorted(p for p in root.iterdir() if p.is_dir())[-1]
    store._day = lambda: newest  # type: ignore[method-assign]

    def one_new() -> None:
        store.save(Image.new("RGB", (8, 8)), {"task": "txt2img", "prompt": "new", "seed": 1},
                   "sd15:bench")

    after_new = []
    for _ in range(5):
        one_new()
        after_new += timed(lambda: index.query(Page()), 1)
    rows.append([f"/history after one new image (its folder holds "
                 f"{args.images // args.days})", ms(after_new), 5])
    rows.append(["/history again within 2 s of that image (re-lists its folder)",
                 ms(timed(lambda: index.query(Page()), 1)), 1])
    index.close()
    time.sleep(2.1)  # what follows is timed on settled folders
    restarted = HistoryIndex(root)
    rows.append(["restart: first call of a new index on the kept file",
                 ms(timed(lambda: restarted.query(Page()), 1)), "once"])
    rows.append(["query 'red circle' (limit 50)",
                 ms(timed(lambda: restarted.query(Page(50, "red circle")), args.repeats)),
                 args.repeats])
    rows.append(["page at offset 9,000 (limit 50)",
                 ms(timed(lambda: restarted.query(Page(50, "", 9000)), args.repeats)),
                 args.repeats])
    rows.append(["query 'layout' at offset 1,000",
                 ms(timed(lambda: restarted.query(Page(50, "layout", 1000)), args.repeats)),
                 args.repeats])
    rows.append(["count (the Outputs tab's page label)",
                 ms(timed(lambda: restarted.count(""), args.repeats)), args.repeats])
    assert len(restarted.query(Page(500))) == 500
    print(table(rows, ["step", "ms (median)", "runs"]))
    print(f"\nindex file: {(root / '.history' / 'index.sqlite').stat().st_size / 2**20:.1f} MB")
    restarted.close()
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
