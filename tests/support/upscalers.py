"""Upscaler model files for tests: a random ESRGAN-family net built from spandrel's own
architecture class (seeded), saved as safetensors the way model sites share them, and a
pickled file the studio must refuse without opening."""

from __future__ import annotations

from pathlib import Path

RANDOM_UPSCALER = "random-compact-2x"
PICKLED_UPSCALER = "pickled-esrgan"


def random_compact(scale: int = 2, seed: int = 0):
    """A random RealESRGAN compact net (SRVGGNetCompact), as spandrel builds it."""
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)


def write_upscalers(folder: Path) -> Path:
    """`folder` with the random net (`random-compact-2x.safetensors`) and a pickled
    `pickled-esrgan.pth` (not a real pickle: nothing may ever open it)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    net = random_compact()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(folder / f"{RANDOM_UPSCALER}.safetensors"))
    (folder / f"{PICKLED_UPSCALER}.pth").write_bytes(b"\x80\x04 never unpickled")
    return folder
