"""Shared-memory footprint at real SD1.5 size, model reuse, and tab switching.

    python bench/memory.py [--folder /tmp/sd15-random] [--dtype fp16]

Builds the real-size SD1.5-family architectures (base, inpainting, instruct and GLIGEN UNets,
four ControlNets, VAE, CLIP text encoder) with random weights in the Hub layout (once; about
11 GB of disk in fp16), points the registry at them and runs every tab once (1 step, 64 px),
then reports:
  * resident memory (RSS growth) against the sum of the unique components' bytes and against
    the naive way (each tab loading its own full pipeline: the sum over tabs);
  * how many loads the second use of each tab performs (goal 0) and its wall time.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

from _common import rss_bytes, table

from studio.backend.models.modelsets import CONTROL_TYPES

GiB = 1024**3


def sd15_unet_config(**extra: object) -> dict:
    cfg = dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8,
    )
    cfg.update(extra)
    return cfg


def _save(model, path: Path, dtype) -> None:
    model.to(dtype).save_pretrained(path)
    del model
    gc.collect()


def build_base(base: Path, dtype) -> None:
    """Random SD1.5-size base model (UNet, VAE, CLIP text encoder, tokenizer, scheduler) in
    the Hub layout (bench/gpu.py uses it too)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from studio.backend.models.tiny import _scheduler_config, save_pipeline_index
    from studio.backend.models.tokenizer_vocab import write_tokenizer

    torch.manual_seed(0)
    _save(UNet2DConditionModel(**sd15_unet_config()), base / "unet", dtype)
    _save(AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, layers_per_block=2, sample_size=512,
    ), base / "vae", dtype)
    vocab = write_tokenizer(base / "tokenizer")
    _save(CLIPTextModel(CLIPTextConfig(
        vocab_size=max(vocab, 49408), hidden_size=768, intermediate_size=3072,
        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    )), base / "text_encoder", dtype)
    (base / "scheduler").mkdir(parents=True, exist_ok=True)
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(_scheduler_config()))
    save_pipeline_index(base, "StableDiffusionPipeline", {})


def build_controlnet(folder: Path, dtype) -> None:
    """A random SD1.5-size ControlNet in the Hub layout."""
    from diffusers import ControlNetModel

    cfg = sd15_unet_config()
    for k in ("out_channels", "up_block_types", "sample_size"):
        cfg.pop(k)
    _save(ControlNetModel(**cfg, conditioning_embedding_out_channels=(16, 32, 96, 256)),
          folder, dtype)


def build(folder: Path, dtype) -> None:
    """Write random real-size models in the Hub layout (skipped when already there)."""
    from diffusers import UNet2DConditionModel

    if (folder / "DONE").exists():
        return
    print("building random real-size models in", folder, flush=True)
    build_base(folder / "base", dtype)
    for name, extra in (("inpaint", {"in_channels": 9}), ("instruct", {"in_channels": 8}),
                        ("gligen", {"attention_type": "gated"}),
                        ("gligen_inpaint", {"attention_type": "gated", "in_channels": 9})):
        _save(UNet2DConditionModel(**sd15_unet_config(**extra)), folder / name / "unet", dtype)
    for ctype in CONTROL_TYPES:
        build_controlnet(folder / f"controlnet-{ctype}", dtype)
    (folder / "DONE").write_text("ok")


def tab_requests(tmp: Path) -> dict[str, tuple[str, dict]]:
    """One small valid request per tab (1 step, 64 px)."""
    import numpy as np
    from PIL import Image

    img = tmp / "in.png"
    mask = tmp / "mask.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(img)
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    Image.fromarray(m).save(mask)
    common = {"prompt": "a red circle", "seed": 1, "steps": 1, "width": 64, "height": 64}
    units = [{"type": t, "image": str(img), "weight": 1.0, "start": 0.0, "end": 1.0}
             for t in CONTROL_TYPES]
    return {
        "txt2img": ("txt2img", dict(common)),
        "control (3 units)": ("control", {**common, "units": units[:3]}),
        "control (canny)": ("control", {**common, "units": units[3:]}),
        "layout": ("layout", {**common, "steps": 2, "gligen_fraction": 0.5,
                              "boxes": [{"phrase": "a circle", "box": [0.1, 0.1, 0.6, 0.6]}]}),
        "inpaint": ("inpaint", {**{k: v for k, v in common.items()
                                   if k not in ("width", "height")},
                                "image": str(img), "mask": str(mask)}),
        "instruct": ("instruct", {**{k: v for k, v in common.items()
                                    if k not in ("prompt", "width", "height")},
                                  "image": str(img), "prompt": "make it blue",
                                  "max_side": 64}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "sd15-random")
    ap.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16")
    args = ap.parse_args()

    import torch

    from studio.backend.models.modelsets import ModelSet
    from studio.backend.models.registry import ModelRegistry, module_bytes
    from studio.backend.service import Studio
    from studio.settings import Settings

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    build(args.folder, dtype)
    f = args.folder
    ms = ModelSet(name="sd15-random", repos={
        "base": str(f / "base"), "inpaint": str(f / "inpaint"),
        "instruct": str(f / "instruct"), "gligen": str(f / "gligen"),
        "gligen_inpaint": str(f / "gligen_inpaint"),
        **{f"controlnet:{t}": str(f / f"controlnet-{t}") for t in CONTROL_TYPES},
    })
    tmp = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    settings = Settings(models="sd15", offline=True, outputs_dir=tmp / "out", dtype=args.dtype)
    registry = ModelRegistry(ms, dtype=dtype, offline=True)
    studio = Studio(settings, model_set=ms, registry=registry)
    gc.collect()
    rss0 = rss_bytes()
    rows, second = [], []
    requests = tab_requests(tmp)
    for label, (method, req) in requests.items():
        before = set(registry.loaded_keys())
        t0 = time.perf_counter()
        getattr(studio, method)(dict(req))
        rows.append([label, f"{time.perf_counter() - t0:.1f}",
                     len(set(registry.loaded_keys()) - before)])
    gc.collect()
    rss_all = rss_bytes() - rss0
    for label, (method, req) in requests.items():
        loads = registry.stats["load"]
        t0 = time.perf_counter()
        getattr(studio, method)(dict(req))
        second.append([label, f"{time.perf_counter() - t0:.2f}", registry.stats["load"] - loads])

    sizes = {k: module_bytes(registry._entries[k].obj) for k in registry.loaded_keys()}
    unique = sum(sizes.values())

    def b(role: str) -> int:
        return sizes.get(registry.key(role), 0)

    shared = b("vae") + b("text_encoder")
    naive = (
        shared + b("unet")  # txt2img
        # the control tab: one pipeline holding all four ControlNets
        + shared + b("unet") + sum(b(f"controlnet:{t}") for t in CONTROL_TYPES)
        + shared + b("unet_gligen")  # layout
        + shared + b("unet_inpaint")  # inpaint
        + shared + b("unet_instruct")  # instruct
    )
    print(table(rows, ["tab (first use)", "s", "new components"]))
    print()
    print(table(second, ["tab (second use)", "s", "loads"]))
    print()
    print(table([
        ["RSS growth, all tabs resident", f"{rss_all / GiB:.2f}", f"{rss_all / unique:.2f}x"],
        ["sum of unique components", f"{unique / GiB:.2f}", "1.00x"],
        ["naive: each tab its own pipeline", f"{naive / GiB:.2f}", f"{naive / unique:.2f}x"],
    ], ["memory", "GiB", "vs unique"]))
    print(f"\ncomponents: {len(sizes)}; dtype {args.dtype}; loads total {registry.stats['load']}")


if __name__ == "__main__":
    main()
