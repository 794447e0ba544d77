"""Per-call overhead: a raw diffusers script vs the studio's backend vs gradio_client.

    python bench/overhead.py [--quick] [--repeats 5] [--sets toy,sd15] [--breakdown]

For each workload the same image (same weights, seed, steps, size, sampler) is made three
ways and the median time of each is reported:
  * raw: a `StableDiffusionPipeline` loaded with `from_pretrained` from the model folder,
    Euler a, a CPU generator: no studio code at all (the floor);
  * backend: `Studio.txt2img` (validation, seed, pipeline configuration, saving the PNG);
  * gradio_client: `Client.predict(..., api_name="/txt2img")` against the launched app.
The studio's fixed cost per call is backend minus raw; gradio's is client minus backend.

Workloads: (i) the trained toy world (`assets/toy`, 64 px, 25 and 8 steps) and (ii) SD1.5-size
random models (256 px, 3 steps, CPU; built once, base only, by bench/memory.py's code into
--sd15-folder, about 2 GB of fp16 on disk). `--quick` runs the toy set with 3 repeats.
`--breakdown` times the studio's stages (pipeline assembly, configuration, the pipeline call,
saving) per call on the first set; its fixed cost is Studio.run minus the pipeline's __call__.
The raw and studio images are compared: they must be equal.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, median, table, timed

PROMPT = "a red circle"
TOY_BASE = ROOT / "assets" / "toy" / "stable-diffusion"
# pause before each timed call, so the server's tail of the previous gradio call (closing
# its event stream) cannot land on the next timed call (a precaution: the raw pipeline was
# slower than the backend at 25 steps with and without it)
SETTLE_S = 0.3


def raw_pipeline(folder: Path, components: dict[str, Any] | None = None) -> Any:
    """The raw script's pipeline: diffusers only, as a user would write it (`components`
    given: built from those modules instead of loading them again)."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    if components:
        pipe = StableDiffusionPipeline(
            **components, scheduler=EulerAncestralDiscreteScheduler.from_pretrained(
                folder, subfolder="scheduler"),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            folder, safety_checker=None, requires_safety_checker=False, dtype=torch.float32,
            local_files_only=True)
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def raw_call(pipe: Any, req: dict[str, Any]) -> Any:
    """One raw generation (the image as PIL)."""
    import torch

    return pipe(prompt=req["prompt"], num_inference_steps=req["steps"], guidance_scale=7.5,
                width=req["width"], height=req["height"],
                generator=torch.Generator("cpu").manual_seed(req["seed"])).images[0]


def studio_for(models: str, folder: Path | None, outputs: Path) -> Any:
    """A Studio on the toy set, or on the SD1.5-size random base in `folder`."""
    from studio.backend.models.modelsets import ModelSet
    from studio.backend.service import Studio
    from studio.settings import Settings

    cache = Path(tempfile.gettempdir()) / "studio-bench"
    if models == "toy":
        return Studio(Settings(models="toy", cache_dir=cache, offline=True,
                               outputs_dir=outputs))
    ms = ModelSet(name="sd15-random", repos={"base": str(folder)})
    return Studio(Settings(models="sd15", cache_dir=cache, offline=True,
                           outputs_dir=outputs, dtype="fp32"), model_set=ms)


def measure(models: str, folder: Path, workloads: list[tuple[int, int]], repeats: int,
            client_too: bool = True) -> tuple[list[list[str]], list[list[str]]]:
    """(main rows, gradio rows) for each (size, steps) workload.

    Raw, backend and client calls are interleaved (one of each per round) so that load from
    other processes drifts over all three alike. The SD1.5-size raw pipeline is built from the
    very module objects the studio loaded (same weights, half the memory); the toy one is
    loaded from its folder by diffusers alone.
    """
    import numpy as np

    studio = studio_for(models, folder, Path(tempfile.mkdtemp(prefix="bench-out-")))
    studio.preload()
    if models == "toy":
        pipe = raw_pipeline(folder)
    else:
        pipe = raw_pipeline(folder, {r: studio.registry.component(r)
                                     for r in ("unet", "vae", "text_encoder", "tokenizer")})
    client = plain = demo = None
    handler_s: list[float] = []
    if client_too:
        from gradio_client import Client

        from studio.ui.app import build_app

        demo = build_app(studio)
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
        client = Client(url, verbose=False)
        plain = Client(url, verbose=False, download_files=False)
        run = studio.run

        def timed_run(*a: Any, **kw: Any) -> Any:  # the handler's share, seen in the server
            t0 = time.perf_counter()
            try:
                return run(*a, **kw)
            finally:
                handler_s.append(time.perf_counter() - t0)

        studio.run = timed_run
    rows, grows = [], []
    if client is not None:
        floor = median(timed(lambda: client.predict(api_name="/cancel"), repeats))
        grows.append(["/cancel (no work, no queue): protocol floor", "", f"{floor * 1000:.0f}",
                      "", "", ""])
    for size, steps in workloads:
        req = {"prompt": PROMPT, "seed": 1, "steps": steps, "width": size, "height": size}
        calls: dict[str, Callable[[], Any]] = {
            "raw": lambda r=req: raw_call(pipe, r),
            "backend": lambda r=req: studio.txt2img(dict(r)),
        }
        if client is not None:
            calls["client"] = lambda r=req: client.predict(**r, api_name="/txt2img")
            calls["no_download"] = lambda r=req: plain.predict(**r, api_name="/txt2img")
        same = np.array_equal(np.asarray(calls["raw"]()), np.asarray(calls["backend"]().image))
        for fn in calls.values():
            fn()  # warm
        times: dict[str, list[float]] = {k: [] for k in calls}
        handler_s.clear()
        for _ in range(repeats):
            for k, fn in calls.items():
                time.sleep(SETTLE_S)  # let the server finish the last call's stream first
                times[k] += timed(fn, 1)
        t = {k: median(v) for k, v in times.items()}
        label = f"{models} {size}px {steps} steps{'' if same else ' (IMAGES DIFFER)'}"
        client_s = t.get("client", float("nan"))
        rows.append([
            label, f"{t['raw'] * 1000:.0f}", f"{t['backend'] * 1000:.0f}",
            f"{(t['backend'] - t['raw']) * 1000:+.0f}", f"{client_s * 1000:.0f}",
            f"{t['backend'] / t['raw']:.3f}x", f"{client_s / t['raw']:.3f}x",
        ])
        if client is not None:
            served = median(_server_share(handler_s))
            grows.append([
                label, f"{served * 1000:.0f}", f"{client_s * 1000:.0f}",
                f"{(client_s - served) * 1000:.0f}",
                f"{(client_s - t['no_download']) * 1000:.0f}",
                f"{(t['no_download'] - served) * 1000:.0f}",
            ])
    if demo is not None:
        demo.close()
    return rows, grows


def _server_share(handler_s: list[float]) -> list[float]:
    """The Studio.run times of the client calls: each round records backend, client and
    no-download calls in that order; the backend's own is not a gradio call."""
    return [t for i, t in enumerate(handler_s) if i % 3]


STAGES = (
    ("studio.backend.service", "Studio", "run", "Studio.run (all of it)"),
    ("studio.backend.tasks.txt2img", None, "base_pipeline", "registry.pipeline() assembly"),
    ("studio.backend.tasks.txt2img", None, "configure_pipe", "configure_pipe (scheduler, LoRA)"),
    ("diffusers", "StableDiffusionPipeline", "__call__", "pipeline __call__"),
    ("studio.backend.service", "Studio", "_finish", "_finish (PNG + metadata + fsync)"),
    ("studio.backend.outputs", None, "write_atomic", "  of which write_atomic"),
    ("studio.backend.outputs", None, "a1111_parameters", "  of which A1111 text"),
)


def breakdown(models: str, folder: Path, size: int, steps: int, repeats: int
              ) -> list[list[str]]:
    """Mean ms per call of the studio's stages. Its fixed cost is Studio.run minus the
    pipeline's __call__, both timed inside one call, so it is not lost in the noise of two
    separate medians on a busy machine."""
    import importlib

    totals: dict[str, list[float]] = {}
    patched: list[tuple[Any, str, Callable]] = []
    for module, owner, attr, label in STAGES:
        target = importlib.import_module(module)
        if owner:
            target = getattr(target, owner)
        original = getattr(target, attr)

        def wrapper(*a: Any, _f: Callable = original, _l: str = label, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _f(*a, **kw)
            finally:
                totals.setdefault(_l, []).append(time.perf_counter() - t0)

        setattr(target, attr, wrapper)
        patched.append((target, attr, original))
    try:
        studio = studio_for(models, folder, Path(tempfile.mkdtemp(prefix="bench-out-")))
        req = {"prompt": PROMPT, "seed": 1, "steps": steps, "width": size, "height": size}
        studio.txt2img(dict(req))
        totals.clear()
        t = median(timed(lambda: studio.txt2img(dict(req)), repeats))
    finally:
        for target, attr, original in patched:
            setattr(target, attr, original)

    def ms(label: str) -> float:
        return sum(totals.get(label, [0.0])) / repeats * 1000

    rows = [[label, f"{ms(label):.1f}"] for *_, label in STAGES]
    fixed = ms(STAGES[0][3]) - ms("pipeline __call__")
    rows.append(["**studio fixed cost (run minus __call__)**", f"**{fixed:.1f}**"])
    rows.append(["Studio.txt2img wall (median)", f"{t * 1000:.1f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="toy set only, 3 repeats")
    ap.add_argument("--sets", default="toy,sd15")
    ap.add_argument("--sd15-folder", type=Path,
                    default=Path(tempfile.gettempdir()) / "sd15-random-base")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the studio's stages (first set, its last workload)")
    ap.add_argument("--only-breakdown", action="store_true", help="skip the comparison")
    ap.add_argument("--no-client", action="store_true", help="skip the gradio_client column")
    args = ap.parse_args()
    sets = args.sets.split(",")
    if args.quick:
        args.repeats, sets = 3, ["toy"]

    import torch

    rows: list[list[str]] = []
    grows: list[list[str]] = []
    todo = []
    if "toy" in sets:
        todo.append(("toy", TOY_BASE, [(64, 25), (64, 8)]))
    if "sd15" in sets:
        from memory import build_base

        if not (args.sd15_folder / "base" / "unet").exists():
            print("building random SD1.5-size base models in", args.sd15_folder, flush=True)
            build_base(args.sd15_folder / "base", torch.float16)
        todo.append(("sd15", args.sd15_folder / "base", [(256, 3)]))
    for models, folder, workloads in [] if args.only_breakdown else todo:
        r, g = measure(models, folder, workloads, args.repeats, not args.no_client)
        rows += r
        grows += g
        gc.collect()
    print(table(rows, ["workload", "raw ms", "backend ms", "studio fixed ms",
                       "gradio_client ms", "backend/raw", "client/raw"]))
    if grows:
        print()
        print(table(grows, ["through gradio", "handler ms (in server)", "client ms",
                            "gradio ms", "of which file download", "of which the rest"]))
    print(f"median of {args.repeats} interleaved runs each; torch threads "
          f"{torch.get_num_threads()}")
    if args.breakdown or args.only_breakdown:
        models, folder, workloads = todo[0]
        size, steps = workloads[-1]
        print()
        print(table(breakdown(models, folder, size, steps, args.repeats),
                    [f"studio stage ({models}, {size} px, {steps} steps)", "ms per call"]))


if __name__ == "__main__":
    main()
