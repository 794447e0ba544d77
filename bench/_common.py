"""Small helpers shared by the benchmarks (run by hand, never by pytest)."""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def table(rows: list[list[object]], header: list[str]) -> str:
    """A GitHub-markdown table (what RESULTS.md holds)."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def tiny_studio(outputs: Path | None = None):
    from studio.backend.service import Studio
    from studio.settings import Settings

    cache = Path(os.environ.get("STUDIO_BENCH_CACHE", Path(tempfile.gettempdir()) / "studio-bench"))
    settings = Settings(models="tiny", cache_dir=cache, offline=True,
                        outputs_dir=outputs or Path(tempfile.mkdtemp(prefix="bench-out-")))
    return Studio(settings)
