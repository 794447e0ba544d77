"""Annotator latency at 512 px, and SAM's first click (embedding) vs later clicks.

Run by hand, not a test:

    .venv/bin/python bench/annotators.py                     # real-size random weights
    .venv/bin/python bench/annotators.py --device cuda
    .venv/bin/python bench/annotators.py --sources sources.json   # real weights {name: path}

Without --sources, every model has its real architecture and size (DPT-Hybrid, OpenPose
body, SAM ViT-B via `sam_model_registry["vit_b"](checkpoint=None)`) with random weights, so
latencies are representative while nothing is downloaded. The random OpenPose heads are
zeroed (it finds nobody): random heatmaps would make the keypoint parser's time meaningless.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotators import get_annotator  # noqa: E402


def _photo(size: int) -> np.ndarray:
    """A deterministic photo-like test picture (gradients, shapes, noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    img = np.stack([xx * 200, yy * 180, (1 - xx) * 150], -1)
    img[(yy - 0.4) ** 2 + (xx - 0.6) ** 2 < 0.05] = (230, 60, 40)
    img[int(size * 0.6):int(size * 0.9), int(size * 0.1):int(size * 0.4)] = (40, 200, 90)
    return (img + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)


def _random_real_size(name: str) -> Any:
    """Annotator `name` with its real architecture and random weights (no download)."""
    import torch

    torch.manual_seed(0)
    if name == "depth":
        from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

        from annotators.depth import DepthAnnotator

        config = DPTConfig(  # Intel/dpt-hybrid-midas
            is_hybrid=True, image_size=384, backbone_featmap_shape=[1, 1024, 24, 24],
            neck_hidden_sizes=[256, 512, 768, 768], reassemble_factors=[1, 1, 1, 0.5],
            backbone_out_indices=[2, 5, 8, 11], use_auxiliary_head=False,
            backbone_config={"global_padding": "same", "layer_type": "bottleneck",
                             "depths": [3, 4, 9], "out_features": ["stage1", "stage2", "stage3"],
                             "embedding_dynamic_padding": True},
        )
        processor = DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False,
                                      image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return DepthAnnotator(DPTForDepthEstimation(config), processor)
    if name == "openpose":
        from controlnet_aux.open_pose.model import bodypose_model

        from annotators.openpose import OpenposeAnnotator

        net = bodypose_model().eval()
        with torch.no_grad():
            for head in (net.model6_1.Mconv7_stage6_L1, net.model6_2.Mconv7_stage6_L2):
                head.weight.zero_()
                head.bias.zero_()
        return OpenposeAnnotator(net)
    if name == "sam":
        from segment_anything import sam_model_registry

        from annotators.sam import SamAnnotator

        return SamAnnotator(sam_model_registry["vit_b"](checkpoint=None))
    return get_annotator(name)


def _time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[float, float]:
    """(first call, median of the next `repeats`) in seconds."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


def main(argv: list[str] | None = None) -> None:
    """Print one table row per annotator (plus SAM's two cases)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512, help="image side and resolution")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sources", type=Path, help="JSON {name: path or repo} of real weights")
    parser.add_argument("--only", nargs="*", help="annotator names to run")
    args = parser.parse_args(argv)
    sources = json.loads(args.sources.read_text()) if args.sources else None

    def sync() -> None:
        if str(args.device).startswith("cuda"):
            torch.cuda.synchronize()

    image, res = _photo(args.size), args.size
    click = [[args.size * 0.6, args.size * 0.4, 1]]
    rows = []
    for name in args.only or ["canny", "scribble", "depth", "openpose", "sam"]:
        start = time.perf_counter()
        annot = (get_annotator(name, sources.get(name), offline=True)
                 if sources and name in sources else _random_real_size(name)).to(args.device)
        load = time.perf_counter() - start
        if name == "sam":
            # first click computes the embedding; the next ones on the same image reuse it
            first, later = _time(lambda a=annot: a.annotate(image, points=click),
                                 max(args.repeats, 1), sync)
            rows.append(("sam: first click (embedding)", load, first, None))
            rows.append(("sam: later clicks (cached)", None, later, later))
            assert annot.embedding_computations == 1
            continue
        drawing = 255 - (np.asarray(get_annotator("canny")(image, res, res)) > 0) * 255
        src = drawing.astype(np.uint8) if name == "scribble" else image
        first, median = _time(lambda a=annot, s=src: a(s, res, res), args.repeats, sync)
        rows.append((name, load, first, median))

    print(f"\ndevice={args.device} torch threads={torch.get_num_threads()} image={args.size}px "
          f"weights={'given sources' if sources else 'random, real size'}")
    print(f"{'annotator':32} {'load s':>8} {'first s':>8} {'median s':>9}")
    for label, load, first, median in rows:
        load_s = f"{load:8.2f}" if load is not None else f"{'':8}"
        median_s = f"{median:9.3f}" if median is not None else f"{'':9}"
        print(f"{label:32} {load_s} {first:8.3f} {median_s}")


if __name__ == "__main__":
    main()
