"""GPU speed: SD1.5 at 512x512, 50 steps, batch 1, fp16, with random full-size weights.

    python bench/gpu.py [--json gpu.json] [--compile-mode default] [--folder /tmp/sd15-random]
    python bench/gpu.py --smoke          # CPU, tiny models, 64 px, 3 steps (what the tests run)
    python bench/gpu.py --unet-formats --size 256 --repeats 3   # channels_last vs contiguous

Builds the SD1.5-size base model and one ControlNet from configs with random weights (once,
about 2.6 GB in fp16; no download), then reports it/s of the denoising loop (steps 2..N,
with a device sync at each step) and seconds per image for:
  * plain diffusers: a StableDiffusionPipeline script on the same weights and scheduler;
  * the studio backend (Studio.txt2img: validation, saving the PNG, every default setting),
    and with channels_last flipped from its default, to show what that setting is worth;
  * the studio with --compile (torch.compile of the UNet, compiled in Studio.warm_up);
  * the studio's control task with one ControlNet (its overhead against txt2img), also
    compiled;
with the peak GPU memory of each (torch.cuda.max_memory_allocated). Prints the anchor
figures for comparison: diffusers' public A100 benchmark, 31 it/s plain and 55.5 it/s with
stable-fast. Without a GPU (or with --smoke) it runs at a tiny size on the CPU: a smoke test
that the whole path works and produces the table, not a speed measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import table

ANCHORS = {"A100 plain diffusers fp16 (diffusers benchmarks)": 31.0,
           "A100 stable-fast (diffusers benchmarks)": 55.5}
CONTROL = " + 1 ControlNet"
PROMPT = "a photograph of an astronaut riding a horse"


class StepClock:
    """Step-end timestamps (after a device sync), so it/s is the denoising loop's own."""

    def __init__(self, device: Any) -> None:
        self.device, self.times = device, []

    def tick(self, *_: Any) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def its(self) -> float:
        t = self.times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else float("nan")


def measure(run: Any, device: Any, repeats: int) -> dict[str, Any]:
    """Median it/s and s/image of `run(clock)` over `repeats`, and its peak GPU memory."""
    import torch

    its, secs, peak = [], [], None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        clock = StepClock(device)
        t0 = time.perf_counter()
        run(clock)
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs.append(time.perf_counter() - t0)
        its.append(clock.its())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    return {"it_s": statistics.median(its), "s_per_image": statistics.median(secs),
            "peak_mib": peak}


def plain_pipeline(base: str, dtype: Any, device: Any) -> Any:
    """The plain diffusers script: components from the same folder, the studio's default
    scheduler (Euler a), SDPA attention (diffusers' default)."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    return StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=dtype),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder",
                                                   torch_dtype=dtype),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(base, subfolder="unet", torch_dtype=dtype),
        scheduler=EulerAncestralDiscreteScheduler.from_pretrained(base, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).to(device)


def model_set(args: argparse.Namespace, dtype: Any) -> Any:
    """The tiny set (smoke) or random SD1.5-size base + canny ControlNet (built once)."""
    from studio.backend.models.builtin import tiny_model_set
    from studio.backend.models.modelsets import ModelSet

    if args.smoke:
        return tiny_model_set(args.cache)
    from memory import build_base, build_controlnet

    folder = args.folder
    if not (folder / "base" / "unet").exists():
        print("building random SD1.5-size models in", folder, flush=True)
        build_base(folder / "base", dtype)
    if not (folder / "controlnet-canny" / "config.json").exists():
        build_controlnet(folder / "controlnet-canny", dtype)
    return ModelSet(name="sd15-random", repos={
        "base": str(folder / "base"), "controlnet:canny": str(folder / "controlnet-canny")})


def studio_for(args: argparse.Namespace, ms: Any, tmp: Path, **speed: Any) -> Any:
    from studio.backend.service import Studio
    from studio.settings import Settings

    settings = Settings(models="tiny" if args.smoke else "sd15", cache_dir=args.cache,
                        offline=True, outputs_dir=tmp / "out", concepts_dir=tmp / "concepts",
                        device="cpu" if args.smoke else "auto",
                        dtype="fp32" if args.smoke else "fp16", **speed)
    return Studio(settings, model_set=ms)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from studio.backend.files import allow_root
    from studio.backend.models.devices import pick_device

    device = torch.device("cpu") if args.smoke else pick_device("auto")
    dtype = torch.float32 if args.smoke else torch.float16
    size, steps = (64, 3) if args.smoke else (args.size, args.steps)
    repeats = 1 if args.smoke else args.repeats
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    allow_root(tmp)  # the control image below is this script's own file
    ms = model_set(args, dtype)
    req = {"prompt": PROMPT, "seed": 1, "steps": steps, "width": size, "height": size}
    warm = {**req, "steps": 2}
    control_image = tmp / "control.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), np.uint8)).save(
        control_image)
    units = [{"type": "canny", "image": str(control_image), "weight": 1.0}]
    rows: dict[str, dict[str, Any]] = {}

    pipe = plain_pipeline(ms.source("unet"), dtype, device)

    def run_plain(clock: StepClock, n: int = steps) -> None:
        pipe(PROMPT, num_inference_steps=n, width=size, height=size,
              generator=torch.Generator("cpu").manual_seed(1),
              callback_on_step_end=lambda p, i, t, kw: (clock.tick(), kw)[1])

    if not args.smoke:  # warm-up runs (CUDA kernels, cuDNN autotuning); smoke: keep it quick
        run_plain(StepClock(device), 2)
    rows["plain diffusers"] = measure(run_plain, device, repeats)
    pipe = None
    _free(device)

    def studio_rows(label: str, studio: Any, control: bool) -> None:
        def run(task: str, data: dict[str, Any]) -> Any:
            return lambda clock: studio.run(task, dict(data), progress=clock.tick)

        if not args.smoke:
            studio.txt2img(dict(warm))
        rows[label] = measure(run("txt2img", req), device, repeats)
        if control:
            if not args.smoke:
                studio.control({**warm, "units": units})
            rows[label + CONTROL] = measure(
                run("control", {**req, "units": units}), device, repeats)

    studio = studio_for(args, ms, tmp)
    default_cl = studio.registry.speed.channels_last
    studio_rows("studio", studio, control=True)
    info = {"speed_report": {k.split("@")[0]: v for k, v in studio.registry.speed_report.items()}}
    del studio
    _free(device)
    flipped = "off" if default_cl else "on"
    studio_rows(f"studio --channels-last {flipped}",
                studio_for(args, ms, tmp, channels_last=flipped), control=False)
    _free(device)
    if args.compile:
        studio = studio_for(args, ms, tmp, compile=True, compile_mode=args.compile_mode)
        info["compile_warm_up_s"] = studio.warm_up()
        studio_rows(f"studio --compile ({args.compile_mode})", studio, control=True)
        from studio.backend.models.speed import compiled_forward

        wrapper = compiled_forward(studio.registry.component("unet"))
        info["compile"] = ("not compiled (see the log)" if wrapper is None
                           else wrapper.failed or dict(wrapper.calls))
    return _report(args, device, dtype, size, steps, repeats, rows, info)


def unet_formats(args: argparse.Namespace) -> dict[str, float]:
    """ms per SD1.5-size UNet forward (random weights, batch 2 as with guidance) in the
    contiguous and channels_last formats, alternating, on this machine's device."""
    import torch
    from diffusers import UNet2DConditionModel
    from memory import sd15_unet_config

    from studio.backend.models.devices import pick_device

    device = pick_device("auto")
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**sd15_unet_config()).to(device, dtype).eval()
    side = args.size // 8
    x = torch.randn(2, 4, side, side, device=device, dtype=dtype)
    text = torch.randn(2, 77, 768, device=device, dtype=dtype)
    times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    with torch.no_grad():
        for i in range(args.repeats + 1):
            for name, fmt in formats.items():
                unet.to(memory_format=fmt)
                clock = StepClock(device)
                clock.tick()
                unet(x, 500, text)
                clock.tick()
                if i:  # the first round warms up
                    times[name].append((clock.times[1] - clock.times[0]) * 1000)
    result = {name: statistics.median(t) for name, t in times.items()}
    print(table([[name, f"{ms:.0f}"] for name, ms in result.items()],
                ["SD1.5 UNet forward", "ms"]))
    print(f"{device.type}, {str(dtype).replace('torch.', '')}, {args.size}x{args.size} px "
          f"(batch 2), median of {args.repeats}; channels_last "
          f"{result['contiguous'] / result['channels_last']:.2f}x the speed of contiguous")
    return result


def _free(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _report(args: argparse.Namespace, device: Any, dtype: Any, size: int, steps: int,
            repeats: int, rows: dict[str, dict[str, Any]], info: dict[str, Any]
            ) -> dict[str, Any]:
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    plain = rows["plain diffusers"]["it_s"]
    overheads = {}  # extra time per step with one ControlNet, against the same studio
    for label, r in rows.items():
        if label.endswith(CONTROL):
            base = label.removesuffix(CONTROL)
            overheads[base] = rows[base]["it_s"] / r["it_s"] - 1
    result = {
        "mode": "smoke" if args.smoke else "gpu", "device": name,
        "dtype": str(dtype).replace("torch.", ""), "size": size, "steps": steps,
        "repeats": repeats, "torch": torch.__version__, "rows": rows,
        "controlnet_overhead": overheads, "anchors_it_s": ANCHORS, **info,
    }
    lines = [[label, f"{r['it_s']:.2f}", f"{r['it_s'] / plain:.2f}x", f"{r['s_per_image']:.3f}",
              "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"]
             for label, r in rows.items()]
    lines += [[f"anchor: {label}", f"{value:.1f}", "", "", ""] for label, value in ANCHORS.items()]
    print(table(lines, ["run", "it/s", "vs plain", "s/image", "peak MiB"]))
    print(f"\n{name}, {result['dtype']}, {size}x{size}, {steps} steps, batch 1, guidance 7.5 "
          f"(UNet batch 2), median of {repeats}; it/s over steps 2..{steps}")
    for label, value in overheads.items():
        print(f"ControlNet overhead ({label}): {value * 100:+.0f}% time per step")
    print("speed path:", json.dumps(info, default=str))
    if args.smoke:
        print("(smoke mode: CPU at a tiny size; these numbers say nothing about GPU speed)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, tiny models, 64 px, 3 steps (automatic without a GPU)")
    ap.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "sd15-random",
                    help="where the random SD1.5-size models are built (bench/memory.py's)")
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "studio-bench",
                    help="model cache for the tiny set (smoke mode)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="leave out the --compile rows")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode for the --compile rows")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--unet-formats", action="store_true",
                    help="only time an SD1.5-size UNet forward in the contiguous and "
                    "channels_last formats on this device (no models built on disk)")
    args = ap.parse_args(argv)
    if args.unet_formats:
        return unet_formats(args)
    if not torch.cuda.is_available() and not args.smoke:
        print("no CUDA GPU here: running the CPU smoke test instead (--smoke)")
        args.smoke = True
    if args.smoke and args.compile:
        # inductor's C++ build takes minutes on a small CPU: the test suite covers compile
        # (dynamo, eager backend) in tests/backend/test_speed.py instead
        print("smoke mode: the --compile rows are left out (inductor on CPU takes minutes)")
        args.compile = False
    return run_bench(args)


if __name__ == "__main__":
    main()
