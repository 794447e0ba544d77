"""What live previews cost: generation time with and without them.

    python bench/previews.py [--repeats 5] [--steps 25]

1. The trained toy world (64 px, 25 steps, CPU), as the studio runs it: the backend call
   with a preview sink (what the UI's stream consumes) against the same call without one,
   and the same through gradio_client (`submit()` iterating the stream vs previews off).
   Reports the previews shown, the steps between them (the k the time budget gave), and
   the share of the time they cost (the goal: at most 10%).
2. At SD1.5's size: one TAESD preview decode of a 512 px image (a random full-size
   `AutoencoderTiny`, the architecture of madebyollin/taesd) against the full VAE decode,
   on this machine's CPU, and the k that gives at a given UNet step time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import median, table, timed


def toy_rows(repeats: int, steps: int) -> list[list[object]]:
    from gradio_client import Client

    from studio.ui.app import build_app
    from toyworld.evaluate import toy_studio

    studio = toy_studio(work=Path(tempfile.mkdtemp(prefix="bench-previews-")))
    req = {"prompt": "a red circle and a blue square", "seed": 1, "steps": steps}
    counts: list[int] = []

    def with_previews() -> None:
        shown: list[int] = []
        studio.txt2img(dict(req), preview=lambda im, s, t: shown.append(s))
        counts.append(len(shown))

    studio.txt2img(dict(req))
    with_previews()  # warm: models and TAESD loaded
    off = median(timed(lambda: studio.txt2img(dict(req)), repeats))
    on = median(timed(with_previews, repeats))
    shown = median([float(c) for c in counts[1:]])
    rows = [["toy, backend", f"{off:.3f}", f"{on:.3f}", f"{(on / off - 1) * 100:+.1f}%",
             f"{shown:.0f}", f"{steps / max(shown, 1):.1f}"]]

    demo = build_app(studio)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)

        def streamed() -> None:
            job = client.submit(**req, api_name="/txt2img")
            job.result()
            counts.append(len(job.outputs()) - 1)

        streamed()
        counts.clear()
        on_api = median(timed(streamed, repeats))
        api_shown = median([float(c) for c in counts])
        studio.settings = replace(studio.settings, previews=False)
        demo.close()
        demo = build_app(studio)  # handlers read the setting when they are built
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
        client = Client(url, verbose=False)
        client.predict(**req, api_name="/txt2img")
        off_api = median(timed(lambda: client.predict(**req, api_name="/txt2img"), repeats))
    finally:
        demo.close()
    rows.append(["toy, gradio_client", f"{off_api:.3f}", f"{on_api:.3f}",
                 f"{(on_api / off_api - 1) * 100:+.1f}%", f"{api_shown:.0f}",
                 f"{steps / max(api_shown, 1):.1f}"])
    return rows


def sd_rows(repeats: int) -> list[list[object]]:
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny

    torch.manual_seed(0)
    taesd = AutoencoderTiny().eval()
    vae = AutoencoderKL(  # SD1.5's VAE configuration
        block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2).eval()
    z = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        taesd.decode(z)
        t = median(timed(lambda: taesd.decode(z), repeats))
        start = time.perf_counter()
        vae.decode(z)
        v = time.perf_counter() - start
    return [["SD1.5 512 px, one decode (s)", f"{v:.3f}", f"{t:.3f}", f"{v / t:.0f}x", "", ""]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    rows = toy_rows(args.repeats, args.steps)
    print(table(rows, ["", "previews off (s)", "on (s)", "cost", "previews", "k (steps)"]))
    print()
    print(table(sd_rows(args.repeats), ["", "full VAE", "TAESD", "ratio", "", ""]))


if __name__ == "__main__":
    main()
