"""The job-time estimate against the clock: what `cost.calibrate` predicts per denoiser pass
at larger sizes, next to a timed pass at each (run by hand; numbers in bench/RESULTS.md).

    .venv/bin/python bench/cost.py --models toy --sizes 128 256 512
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _common  # noqa: F401 - sets up sys.path and offline mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="toy", choices=("toy", "tiny", "tiny-xl"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    args = parser.parse_args()

    from studio.backend.common import base_pipeline
    from studio.backend.cost import _timed
    from studio.backend.service import Studio
    from studio.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="cost-"))
    studio = Studio(Settings(models=args.models, offline=True, outputs_dir=tmp / "out",
                             cache_dir=tmp / "cache", concepts_dir=tmp / "concepts"))
    rate = studio.calibrate()
    print(f"{args.models}: a pass = {rate.linear:.3f} s x MP + {rate.quadratic:.3f} s x MP^2")
    pipe = base_pipeline(studio.registry)
    print(f"{'side':>6} {'predicted s/pass':>17} {'timed s/pass':>13}")
    for side in args.sizes:
        one, two = _timed(pipe, side, 1), _timed(pipe, side, 2)
        timed = (two - one) / 2  # one more guided step: two passes
        predicted = rate.pass_seconds(side * side / 1e6)
        print(f"{side:>6} {predicted:>17.3f} {timed:>13.3f}")


if __name__ == "__main__":
    main()
