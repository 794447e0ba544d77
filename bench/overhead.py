"""API overhead: the same tiny-model generation called on the backend and via gradio_client.

    python bench/overhead.py [--repeats 7]

Prints the median of each and the ratio (goal: <= 1.15x) for a small and a default-size
workload, plus the floor: a call to /cancel, which does no work and skips the queue, so its
time is gradio_client's own round trip (HTTP + server-sent events), paid once per call.
"""

from __future__ import annotations

import argparse

from _common import median, table, timed, tiny_studio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    from gradio_client import Client

    from studio.ui.app import build_app

    studio = tiny_studio()
    demo = build_app(studio)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    rows = []
    floor = median(timed(lambda: client.predict(api_name="/cancel"), args.repeats))
    rows.append(["/cancel (no work, no queue): protocol floor", "", f"{floor * 1000:.0f}", ""])
    for size, steps in ((256, 8), (512, 25)):
        req = {"prompt": "a red circle", "seed": 1, "steps": steps, "width": size,
               "height": size}
        studio.txt2img(dict(req))  # warm: load models, build the pipeline
        client.predict(**req, api_name="/txt2img")  # warm the HTTP path
        d = median(timed(lambda req=req: studio.txt2img(dict(req)), args.repeats))
        a = median(timed(lambda req=req: client.predict(**req, api_name="/txt2img"),
                         args.repeats))
        rows.append([f"txt2img {size}px {steps} steps", f"{d * 1000:.0f}",
                     f"{a * 1000:.0f}", f"{a / d:.2f}x"])
    demo.close()
    print(table(rows, ["workload (tiny set)", "backend ms", "gradio_client ms", "ratio"]))
    print(f"median of {args.repeats} runs each")


if __name__ == "__main__":
    main()
