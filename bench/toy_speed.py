"""Seconds per image for every tab on the trained toy world (64 px, 25 steps, CPU).

    python bench/toy_speed.py [--repeats 7] [--steps 25]

Each tab runs once to load its models, then `--repeats` times; the median is reported. The
time is the Studio call (validation, pipeline, saving the PNG with its metadata), as the UI
and API pay it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import median, table, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    from toyworld.evaluate import box_mask, toy_studio
    from toyworld.scenes import random_scene

    studio = toy_studio(work=Path(tempfile.mkdtemp(prefix="bench-toy-")))
    scene = random_scene(12345)
    common = {"seed": 1, "steps": args.steps, "prompt": scene.caption}
    mask = box_mask(scene.shapes[0].box, grow=3)
    from PIL import Image

    mask_image = Image.fromarray(mask.astype("uint8") * 255)
    tabs = {
        "txt2img": lambda: studio.txt2img(dict(common)),
        "control (scribble)": lambda: studio.control({**common, "units": [
            {"type": "scribble", "image": scene.scribble()}]}),
        "layout (GLIGEN boxes)": lambda: studio.layout({**common, "boxes": scene.boxes()}),
        "inpaint": lambda: studio.inpaint({**common, "image": scene.render(),
                                           "mask": mask_image}),
        "instruct": lambda: studio.instruct({**common, "prompt": "make it blue",
                                             "image": scene.render()}),
        "remix (variation)": lambda: studio.run("remix", {**common, "prompt": "",
                                                          "images": [scene.render()]}),
        "remix (2 pictures + text diff)": lambda: studio.run("remix", {
            **common, "prompt": "", "images": [scene.render(), random_scene(7).render()],
            "text_from": "a red circle", "text_to": "a blue circle", "text_amount": 0.7}),
    }
    rows = []
    for name, fn in tabs.items():
        fn()  # first use loads the models
        rows.append([name, f"{median(timed(fn, args.repeats)):.2f}"])
    print(table(rows, ["tab (toy set, 64 px)",
                       f"median s/image ({args.repeats} runs, {args.steps} steps)"]))


if __name__ == "__main__":
    main()
