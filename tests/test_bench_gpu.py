"""bench/gpu.py's smoke mode: the GPU benchmark runs end to end on the CPU (tiny models) and
reports every row, so the script a GPU machine runs is known to work."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # its `_common` and `memory` imports
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_bench_smoke_prints_every_row_and_writes_json(model_cache, tmp_path, monkeypatch,
                                                          capsys):
    bench = load_bench(monkeypatch)
    out = tmp_path / "gpu.json"
    result = bench.main(["--smoke", "--cache", str(model_cache), "--json", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["rows"].keys() == result["rows"].keys()
    assert result["mode"] == "smoke" and result["steps"] == 3 and result["size"] == 64
    rows = result["rows"]
    assert list(rows) == ["plain diffusers", "studio", "studio + 1 ControlNet",
                          "studio --channels-last on"]
    for label, row in rows.items():
        assert row["it_s"] > 0 and math.isfinite(row["it_s"]) and row["s_per_image"] > 0, label
        assert f"| {label} " in printed
    assert "studio" in result["controlnet_overhead"]
    for anchor in ("31.0", "55.5"):  # the A100 anchors are printed for comparison
        assert anchor in printed
    assert "--compile rows are left out" in printed  # said, not silently dropped
    report = result["speed_report"]
    assert set(report["unet"]["attention"]) == {"AttnProcessor2_0"}  # SDPA everywhere
    assert report["vae"]["vae"] == {"slicing": True, "tiling": "auto", "upcast": "auto"}
