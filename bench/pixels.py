"""Digest of every generating tab's pixels on a built-in model set, to compare two commits.

A refactor that must not change behaviour (the model-family seam, say) is checked by running
this on the commit before and after and comparing the lines: same digest, same pixels.

    .venv/bin/python bench/pixels.py --models toy          # the trained toy world (64 px)
    .venv/bin/python bench/pixels.py --models tiny         # random tiny models
    git stash && .venv/bin/python bench/pixels.py > before.txt; git stash pop
    .venv/bin/python bench/pixels.py > after.txt && diff before.txt after.txt
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import _common  # noqa: F401 - sets up sys.path and offline mode
import numpy as np
from PIL import Image, ImageDraw


def _scene(side: int) -> Image.Image:
    img = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(img).ellipse((side // 4, side // 4, side * 3 // 4, side * 3 // 4), "red")
    return img


def _mask(side: int) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).rectangle((side // 8, side // 8, side // 2, side // 2), 255)
    return mask


def _sketch(side: int) -> Image.Image:
    img = Image.new("RGB", (side, side), "black")
    ImageDraw.Draw(img).rectangle((side // 4, side // 4, side * 3 // 4, side * 3 // 4),
                                  outline="white", width=max(1, side // 32))
    return img


def requests(side: int) -> list[tuple[str, dict]]:
    """One request per generating tab (and mode), small and seeded."""
    common = {"seed": 11, "steps": 3, "width": side, "height": side}
    scene, mask, sketch = _scene(side), _mask(side), _sketch(side)
    return [
        ("txt2img", {**common, "prompt": "a red circle and a blue square"}),
        ("txt2img", {**common, "prompt": "a red circle and a blue square",
                     "attend_excite": True}),
        ("prompt_edit", {**common, "prompt": "a red circle",
                         "edited_prompt": "a blue circle"}),
        ("control", {**common, "prompt": "a green square",
                     "units": [{"type": "scribble", "image": sketch}]}),
        ("control", {**common, "prompt": "a green square",
                     "units": [{"type": "scribble", "image": sketch}],
                     "init_image": scene, "strength": 0.6}),
        ("layout", {**common, "prompt": "two shapes", "gligen_fraction": 1.0, "boxes": [
            {"phrase": "a blue square", "box": [0.1, 0.1, 0.5, 0.5]},
            {"phrase": "a red circle", "box": [0.5, 0.5, 0.9, 0.9]}]}),
        ("inpaint", {**common, "prompt": "a yellow triangle", "image": scene, "mask": mask}),
        ("inpaint", {**common, "prompt": "a yellow triangle", "image": scene, "mask": mask,
                     "mode": "blend"}),
        ("instruct", {**common, "prompt": "make it blue", "image": scene,
                      "max_side": side}),
        ("remix", {**common, "prompt": "", "images": [scene]}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="toy", choices=("toy", "tiny", "tiny-xl"))
    parser.add_argument("--cache-dir", default=None, help="built-in sets' cache (tiny)")
    args = parser.parse_args()

    from studio.backend.service import Studio
    from studio.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="pixels-"))
    settings = Settings(models=args.models, offline=True, outputs_dir=tmp / "outputs",
                        cache_dir=Path(args.cache_dir) if args.cache_dir else tmp / "cache",
                        concepts_dir=tmp / "concepts")
    studio = Studio(settings)
    for task, data in requests(studio.native_size):
        result = studio.run(task, data)
        pixels = np.asarray(result.image.convert("RGB"))
        digest = hashlib.sha256(pixels.tobytes()).hexdigest()[:16]
        label = "+".join([task, *(k for k in ("attend_excite", "init_image", "mode")
                                  if k in data)])
        print(f"{label:28s} {digest}  mean {pixels.mean():7.3f}")


if __name__ == "__main__":
    main()
