"""The toy world's 2x upscaler: RealESRGAN's compact net (`SRVGGNetCompact`, as spandrel
builds it) trained on toy scenes rendered at 64 px (input) and 128 px (target).

The 128 px target draws the same scene with every shape doubled (crisp edges, not an
enlarged 64 px picture). Inputs are the 64 px render, or the target shrunk (area filter) with
a little noise: generated toy images are softer than renders. L1 loss, AdamW.

Seeded (scenes by step), resumable: it saves every `--save-every` steps to
`checkpoints/toy-upscaler` (fp32 safetensors + `progress.json`, committed) and `--resume`
goes on from there (AdamW's moments restart). `export` writes the model in the key layout
spandrel detects (`body.0.weight`, ...) to `assets/toy/upscalers`, where the toy set finds
it. On 2 CPU cores (one thread): 3000 steps in about 9 minutes (a busy machine).

    .venv/bin/python -m toyworld.train_upscaler train --steps 3000
    .venv/bin/python -m toyworld.train_upscaler export
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .scenes import Scene, random_scene
from .train import save_progress, saved_step

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "toy-upscaler"
EXPORT = ROOT / "assets" / "toy" / "upscalers" / "toy-compact-2x.safetensors"
WEIGHTS = "model.safetensors"
SEED = 31
SCALE = 2
ARCH = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 24, "num_conv": 6, "upscale": SCALE,
        "act_type": "prelu"}
CROP = 32  # input pixels of a training crop (a quarter of a scene: 4x faster steps)
SCENE_OFFSET = 50_000_000  # training scenes (evaluation uses seeds from 900 million)


def build() -> torch.nn.Module:
    """A fresh compact net, as spandrel's own class (so the keys are the ones it detects)."""
    from spandrel.architectures.Compact import Compact

    return Compact(**ARCH)


def doubled(scene: Scene) -> Scene:
    """The same scene drawn at twice the size (every shape's centre and size doubled)."""
    shapes = [replace(s, cx=s.cx * SCALE, cy=s.cy * SCALE, size=s.size * SCALE)
              for s in scene.shapes]
    return Scene(shapes, scene.size * SCALE)


def pair(seed: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """(64 px input, 128 px target) of scene `seed`, as HxWx3 floats in 0..1."""
    scene = random_scene(SCENE_OFFSET + seed)
    high = doubled(scene).render()
    if rng.random() < 0.5:
        low = np.asarray(scene.render(), np.float32) / 255
    else:
        low = np.asarray(high.resize((scene.size, scene.size), Image.Resampling.BOX),
                         np.float32) / 255
        low = low + np.random.default_rng(seed).normal(0, rng.uniform(0, 0.03), low.shape)
    return np.clip(low, 0, 1).astype(np.float32), np.asarray(high, np.float32) / 255


def batch_at(step: int, size: int, crop: int = CROP) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of `step` (the same at every run: seeded by the step): aligned
    crops of `crop` input pixels and their targets."""
    rng = random.Random(SEED * 1_000_003 + step)
    lows, highs = [], []
    for i in range(size):
        low, high = pair(step * size + i, rng)
        y, x = rng.randrange(low.shape[0] - crop + 1), rng.randrange(low.shape[1] - crop + 1)
        lows.append(low[y:y + crop, x:x + crop])
        highs.append(high[y * SCALE:(y + crop) * SCALE, x * SCALE:(x + crop) * SCALE])
    return (torch.from_numpy(np.stack(lows)).permute(0, 3, 1, 2),
            torch.from_numpy(np.stack(highs)).permute(0, 3, 1, 2))


def train(steps: int, batch: int = 16, lr: float = 2e-3, resume: bool = False,
          save_every: int = 500, folder: Path = CHECKPOINT) -> Path:
    """Train (or go on training) the upscaler to `steps`; returns the checkpoint folder."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: more threads only wait on each other here
    try:
        return _train(steps, batch, lr, resume, save_every, folder)
    finally:
        torch.set_num_threads(threads)


def _train(steps: int, batch: int, lr: float, resume: bool, save_every: int,
           folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    start = saved_step(folder) if resume else 0
    torch.manual_seed(SEED + start)
    model = build()
    if start:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
        log.info("resuming the toy upscaler at step %d of %d", start, steps)
    folder.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()

    def save(step: int) -> None:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(folder / WEIGHTS))
        save_progress(folder, step, steps)

    t0, loss_sum = time.perf_counter(), 0.0
    for step in range(start, steps):
        for group in opt.param_groups:  # cosine decay to a tenth
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        low, high = batch_at(step, batch)
        loss = torch.nn.functional.l1_loss(model(low), high)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += loss.item()
        if (step + 1) % 100 == 0:
            log.info("step %d: L1 %.4f (%.0f s)", step + 1, loss_sum / 100,
                     time.perf_counter() - t0)
            loss_sum = 0.0
        if (step + 1) % save_every == 0 or step + 1 == steps:
            save(step + 1)
    return folder


def export(folder: Path = CHECKPOINT, out: Path = EXPORT) -> Path:
    """The trained weights as the shipped upscaler file (fp32: 140 kB)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / WEIGHTS))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"architecture": "SRVGGNetCompact", "scale": "2",
                                         "trained_by": "toyworld.train_upscaler"})
    return out


def evaluate(path: Path = EXPORT, n: int = 48) -> dict[str, Any]:
    """Mean absolute error against the 128 px render on new scenes: the model, Lanczos."""
    from safetensors.torch import load_file
    from spandrel import ModelLoader

    model = ModelLoader().load_from_state_dict(load_file(str(path))).eval()
    errors: dict[str, list[float]] = {"model": [], "lanczos": []}
    for i in range(n):
        scene = random_scene(900_000_000 + i)
        low, high = scene.render(), np.asarray(doubled(scene).render(), np.float32) / 255
        x = torch.from_numpy(np.asarray(low, np.float32) / 255).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
        lanczos = np.asarray(low.resize(high.shape[:2][::-1], Image.Resampling.LANCZOS),
                             np.float32) / 255
        errors["model"].append(float(np.abs(y - high).mean()))
        errors["lanczos"].append(float(np.abs(lanczos - high).mean()))
    return {k: round(float(np.mean(v)), 4) for k, v in errors.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=("train", "export", "evaluate"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resume", action="store_true",
                   help="continue from the last save (checkpoints/toy-upscaler/progress.json)")
    p.add_argument("--save-every", type=int, default=500)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.stage == "train":
        train(args.steps, args.batch, resume=args.resume, save_every=args.save_every)
    elif args.stage == "export":
        print(export())
    else:
        print(json.dumps(evaluate()))


if __name__ == "__main__":
    main()
