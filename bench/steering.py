"""Time cost of prompt-to-prompt and Attend-and-Excite relative to plain text to image,
on the trained toy world (64 px, 25 steps, CPU).

    python bench/steering.py [--repeats 5] [--steps 25]

Each workload runs once to load its models, then `--repeats` times; the median is reported
with its ratio to plain text to image. A prompt edit renders two images (source and edit) in
one batch, so about 2x is its floor; Attend-and-Excite adds a forward and backward pass per
update in the first half of the steps, plus up to 20 refinement updates at two steps.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import median, table, timed

PROMPT = "a red circle and a blue square and a yellow triangle"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    from toyworld.evaluate import toy_studio

    studio = toy_studio(work=Path(tempfile.mkdtemp(prefix="bench-steering-")))
    common = {"seed": 1, "steps": args.steps, "prompt": PROMPT}
    edit = {**common, "edited_prompt": PROMPT.replace("blue", "green")}
    workloads = {
        "txt2img (plain)": lambda: studio.txt2img(dict(common)),
        "prompt_edit replace": lambda: studio.run("prompt_edit", dict(edit)),
        "prompt_edit replace + local blend": lambda: studio.run(
            "prompt_edit", {**edit, "local_blend": "square"}),
        "prompt_edit reweight": lambda: studio.run(
            "prompt_edit", {**common, "mode": "reweight", "reweight": {"red": 2}}),
        "txt2img + Attend-and-Excite": lambda: studio.txt2img(
            {**common, "attend_excite": True}),
    }
    rows, plain = [], None
    for name, fn in workloads.items():
        fn()
        seconds = median(timed(fn, args.repeats))
        plain = plain or seconds
        rows.append([name, f"{seconds:.2f}", f"{seconds / plain:.2f}x"])
    print(table(rows, ["workload (toy set, 64 px)",
                       f"median s ({args.repeats} runs, {args.steps} steps)", "vs plain"]))


if __name__ == "__main__":
    main()
