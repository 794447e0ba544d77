"""One real-size SDXL load and one step, from a Hugging Face cache, offline (run by hand).

    python bench/sdxl_real.py [--cache /tmp/sdxl-hub] [--size 256]

Writes SDXL's real architecture with random fp16 weights (the UNet is 2.6 B parameters: 5 GB
in fp16, 10 GB in fp32) under the real repo id `stabilityai/stable-diffusion-xl-base-1.0`
in a Hub cache (`models--org--name/snapshots/<rev>/`, `refs/main`), built from the configs
the SDXL family ships for single files (`Family.configs`: the same numbers the Hub's repo
holds), once. Then a Studio started as `--models sdxl` with `HF_HUB_OFFLINE=1` loads it by
repo id through the code users run, and generates one image of one step at `--size` px,
twice (the second run loads nothing). Reports load and step times and resident memory.

`--single-file` then writes the same weights as one original-layout (SGM) checkpoint, as
model sites share SDXL fine-tunes (fp16, about 7 GB), and loads it with an empty Hub cache:
its configs and tokenizers come only from what the studio ships (`Family.configs`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import time
from pathlib import Path

from _common import rss_bytes, table

GiB = 1024**3
REVISION = "0" * 40


def build(cache: Path) -> Path:
    """The random real-size SDXL base repo in the Hub cache layout; returns the snapshot."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from studio.backend.models.families import get_family

    family = get_family("sdxl")
    repo = cache / ("models--" + family.model_set.base.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    if (snapshot / "COMPLETE").is_file():
        return snapshot
    configs = family.write_configs(cache / "configs")
    shutil.copytree(configs, snapshot, dirs_exist_ok=True)
    (snapshot / "COMPLETE").unlink(missing_ok=True)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float16)  # build in fp16: never 10 GB of fp32 at once
    try:
        for sub, make in (
            ("unet", lambda: UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(snapshot, subfolder="unet"))),
            ("vae", lambda: AutoencoderKL.from_config(
                AutoencoderKL.load_config(snapshot, subfolder="vae"))),
            ("text_encoder", lambda: CLIPTextModel(
                CLIPTextConfig.from_pretrained(snapshot, subfolder="text_encoder"))),
            ("text_encoder_2", lambda: CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(snapshot, subfolder="text_encoder_2"))),
        ):
            model = make()
            model.save_pretrained(snapshot / sub, safe_serialization=True)
            del model
            gc.collect()
    finally:
        torch.set_default_dtype(torch.float32)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    (snapshot / "COMPLETE").write_text("1")
    return snapshot


def run(studio, registry, size: int, expect: str) -> list[list[object]]:
    """Two 1-step generations: (label, seconds, loads, RSS growth) rows."""
    req = {"prompt": "a lighthouse at dusk", "steps": 1, "width": size, "height": size,
           "seed": 1}
    rss0, rows = rss_bytes(), []
    for label in ("first (loads)", "second"):
        loads = registry.stats["load"]
        t = time.perf_counter()
        result = studio.txt2img(req)
        rows.append([label, f"{time.perf_counter() - t:.1f}", registry.stats["load"] - loads,
                     f"{(rss_bytes() - rss0) / GiB:.2f}"])
    assert result.info["model"] == expect, result.info["model"]
    return rows


def single_file(cache: Path, snapshot: Path, size: int) -> list[list[object]]:
    """The snapshot as one SGM checkpoint, loaded with an empty Hub cache (shipped configs)."""
    import torch

    from studio.backend.models.families import get_family
    from studio.backend.models.registry import ModelRegistry
    from studio.backend.service import Studio
    from studio.settings import Settings
    from tests.support.convert import save_single_file_xl

    file = cache / "files" / "sdxl-random.safetensors"
    if not file.is_file():
        save_single_file_xl(snapshot, file, dtype=torch.float16)
        gc.collect()
    empty = cache / "empty-hub"
    empty.mkdir(exist_ok=True)
    os.environ["HF_HUB_CACHE"] = str(empty)
    model_set = get_family("sdxl").model_set.with_base(str(file))
    settings = Settings(models=str(file), offline=True, previews=False,
                        cache_dir=cache / "studio-file", outputs_dir=cache / "outputs")
    registry = ModelRegistry(model_set, offline=True, cache_dir=empty,
                             configs_dir=settings.cache_dir / "family-configs")
    studio = Studio(settings, model_set=model_set, registry=registry)
    return run(studio, registry, size, file.name)  # a file is named by its file name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path("/tmp/sdxl-hub"))
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--single-file", action="store_true",
                   help="also load it as one original-layout checkpoint, shipped configs only")
    args = p.parse_args()
    t0 = time.perf_counter()
    snapshot = build(args.cache)
    built = time.perf_counter() - t0
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(args.cache)

    from studio.backend.models.families import get_family
    from studio.backend.models.registry import ModelRegistry
    from studio.backend.service import Studio
    from studio.settings import Settings

    sdxl = get_family("sdxl").model_set
    settings = Settings(models="sdxl", offline=True, previews=False,
                        cache_dir=args.cache / "studio", outputs_dir=args.cache / "outputs")
    registry = ModelRegistry(sdxl, offline=True, cache_dir=args.cache)
    studio = Studio(settings, model_set=sdxl, registry=registry)
    rows = run(studio, registry, args.size, sdxl.base)
    print(f"built in {built:.0f} s: {snapshot}")
    print(table(rows, ["Hub cache by repo id: txt2img, 1 step", "s", "loads",
                       "RSS growth GiB"]))
    print(json.dumps({"size": args.size, "dtype": str(registry.dtype),
                      "unet_params": sum(p.numel() for p in
                                         registry.component("unet").parameters())}))
    if args.single_file:
        del studio, registry
        gc.collect()
        print(table(single_file(args.cache, snapshot, args.size),
                    ["single file, shipped configs: txt2img, 1 step", "s", "loads",
                     "RSS growth GiB"]))


if __name__ == "__main__":
    main()
