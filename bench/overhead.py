"""API overhead: the same tiny-model generation called on the backend and via gradio_client.

    python bench/overhead.py [--repeats 7] [--size 256] [--steps 4]

Prints the median of each and the ratio (goal: <= 1.15x).
"""

from __future__ import annotations

import argparse

from _common import median, table, timed, tiny_studio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()

    from gradio_client import Client

    from studio.ui.app import build_app

    studio = tiny_studio()
    req = {"prompt": "a red circle", "seed": 1, "steps": args.steps,
           "width": args.size, "height": args.size}
    studio.txt2img(dict(req))  # warm: load models, build the pipeline
    demo = build_app(studio)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    client.predict(**req, api_name="/txt2img")  # warm the HTTP path

    direct = timed(lambda: studio.txt2img(dict(req)), args.repeats)
    api = timed(lambda: client.predict(**req, api_name="/txt2img"), args.repeats)
    demo.close()
    d, a = median(direct), median(api)
    print(table(
        [["backend (direct)", f"{d * 1000:.0f}"], ["gradio_client /txt2img", f"{a * 1000:.0f}"],
         ["ratio", f"{a / d:.2f}x"]],
        ["path", f"median ms ({args.repeats} runs, {args.size}px, {args.steps} steps)"],
    ))


if __name__ == "__main__":
    main()
