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
    """Previews on and off, run in turn (one of each per round, so a change in the machine's
    load hits both alike)."""
    from gradio_client import Client

    from studio.backend import previews, service
    from studio.ui.app import build_app
    from toyworld.evaluate import toy_studio

    class Previewer(previews.Previewer):
        """Remembers the last job's previewer, to read what its previews cost."""

        last: previews.Previewer

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            Previewer.last = self

    service.Previewer = Previewer  # type: ignore[misc]

    studio = toy_studio(work=Path(tempfile.mkdtemp(prefix="bench-previews-")))
    req = {"prompt": "a red circle and a blue square", "seed": 1, "steps": steps}
    counts: list[int] = []

    shares: list[float] = []  # the previews' own measured time / the job's time

    def with_previews() -> None:
        shown: list[int] = []
        start = time.perf_counter()
        studio.txt2img(dict(req), preview=lambda im, s, t: shown.append(s))
        counts.append(len(shown))
        shares.append(Previewer.last.spent / (time.perf_counter() - start))

    def plain() -> None:
        studio.txt2img(dict(req))

    on_demo = build_app(studio)  # handlers read the setting when they are built
    studio.settings = replace(studio.settings, previews=False)
    off_demo = build_app(studio)
    studio.settings = replace(studio.settings, previews=True)
    try:
        on_client, off_client = (
            # the server's cost only: the client fetches no file (a browser fetches each
            # preview it shows, a few kB of JPEG)
            Client(demo.launch(prevent_thread_lock=True, quiet=True)[1], verbose=False,
                   download_files=False)
            for demo in (on_demo, off_demo))
        api_counts: list[int] = []

        def streamed() -> None:
            job = on_client.submit(**req, api_name="/txt2img")
            job.result()
            api_counts.append(len(job.outputs()) - 1)

        def predicted() -> None:
            off_client.predict(**req, api_name="/txt2img")

        rows = []
        for name, off_fn, on_fn, seen in (("toy, backend", plain, with_previews, counts),
                                          ("toy, gradio_client", predicted, streamed,
                                           api_counts)):
            off_fn()
            on_fn()  # warm: models, TAESD and the HTTP path
            seen.clear()
            offs, ons = [], []
            for _ in range(repeats):
                offs += timed(off_fn, 1)
                ons += timed(on_fn, 1)
            off, on = median(offs), median(ons)
            shown = median([float(c) for c in seen])
            own = f"{median(shares) * 100:.1f}%" if seen is counts else ""
            rows.append([name, f"{off:.3f}", f"{on:.3f}", f"{(on / off - 1) * 100:+.1f}%",
                         own, f"{shown:.0f}", f"{steps / max(shown, 1):.1f}"])
    finally:
        on_demo.close()
        off_demo.close()
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
    return [["SD1.5 512 px, one decode (s)", f"{v:.3f}", f"{t:.3f}", f"{v / t:.0f}x"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    rows = toy_rows(args.repeats, args.steps)
    print(table(rows, ["", "previews off (s)", "on (s)", "wall-clock cost",
                       "previews' own time", "previews", "k (steps)"]))
    print()
    print(table(sd_rows(args.repeats), ["", "full VAE", "TAESD", "ratio"]))


if __name__ == "__main__":
    main()
