"""bench/attend_excite_variants.py, the research record behind the README's Attend-and-Excite
numbers: it runs on the toy set, puts back what it patched in the studio's A&E module, and its
token-blanking probe shows what the README says (padding alone draws no red or blue)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_ae", ROOT / "bench" / "attend_excite_variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_run_and_put_the_studio_module_back(capsys):
    from studio.backend.steering import excite

    before = (excite.AttendExcite.loss, excite.Excitation.__init__, excite.ALTER_FRACTION,
              excite.SCALE_FACTOR, excite.MAX_REFINE, dict(excite.REFINE_AT))
    bench = load_bench()
    out = bench.main(["--n", "1", "--separation", "1", "--candidates", "2", "--alter", "0.3",
                      "--pairs", "2:3,6:7,10:11", "--refine", '{"0.2": 0.5}', "--plain"])
    assert out["attend_excite"] in (0.0, 1.0) and out["plain"] in (0.0, 1.0)
    assert '"attend_excite"' in capsys.readouterr().out
    after = (excite.AttendExcite.loss, excite.Excitation.__init__, excite.ALTER_FRACTION,
             excite.SCALE_FACTOR, excite.MAX_REFINE, dict(excite.REFINE_AT))
    assert after == before


def test_blanking_the_phrases_leaves_only_the_last_colour():
    bench = load_bench()
    kept = bench.main(["--blank", "none", "--n", "1"])["drawn"]
    padding_only = bench.main(["--blank", "prompt", "--n", "1"])["drawn"]
    assert kept == {"red": 1, "blue": 1, "yellow": 1}
    assert padding_only["red"] == 0 and padding_only["blue"] == 0
