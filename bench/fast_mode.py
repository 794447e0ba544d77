"""Fast mode (LCM-LoRA, 4 steps) against the default 25 steps, same model and size.

    python bench/fast_mode.py [--size 512] [--repeats 3]

On the tiny set by default; pass --models sd15 on a machine with the weights.
"""

from __future__ import annotations

import argparse

from _common import median, table, timed, tiny_studio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    studio = tiny_studio()
    base = {"prompt": "a red circle", "seed": 1, "width": args.size, "height": args.size}
    default = {**base, "steps": 25}
    fast = {**base, "steps": 25, "fast": True}
    studio.txt2img(dict(default))
    studio.txt2img(dict(fast))  # loads the LCM-LoRA once
    t_default = median(timed(lambda: studio.txt2img(dict(default)), args.repeats))
    t_fast = median(timed(lambda: studio.txt2img(dict(fast)), args.repeats))
    print(table(
        [["default (Euler a, 25 steps)", f"{t_default:.2f}"],
         ["fast (LCM-LoRA, 4 steps)", f"{t_fast:.2f}"],
         ["ratio", f"{t_fast / t_default:.2f}x"]],
        ["mode", f"median s ({args.repeats} runs, {args.size}px, tiny set)"],
    ))


if __name__ == "__main__":
    main()
