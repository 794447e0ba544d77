"""The GPU speed path, applied once where the registry loads a model.

* `channels_last` memory format for UNets and ControlNets (cuDNN's fast convolution layout);
  on by default on CUDA only (see README "Speed" for the CPU measurement).
* SDPA checked: every plain attention layer runs torch's `scaled_dot_product_attention`
  (`AttnProcessor2_0`); what each model uses is reported and logged.
* `--compile`: `torch.compile` of the shared base UNet's `forward`, installed in place so the
  registry, every pipeline and LoRA loading keep the same module object. Calls with gradients
  (concept training, Attend-and-Excite's latent updates) and calls inside `eager(unet)` (the
  steering processors of prompt-to-prompt and Attend-and-Excite) run the UNet uncompiled:
  those swap attention processors per call, which would otherwise recompile every time.
  A compile failure falls back to eager with one logged error instead of failing the job.
* VAE: slicing (batches decode one image at a time), tiling (`auto`: above 1024 px a side,
  where a whole decode needs gigabytes; tiles leave faint seams, so not below) and the fp16
  upcast. Diffusers' SD1.5 pipelines (0.42) never upcast the VAE (only the SDXL ones do, from
  `force_upcast`), and SD1.5's VAE config sets `force_upcast` true although it mostly decodes
  fine in fp16; so `auto` decodes in fp16 and, when that gives NaN or inf from finite latents,
  decodes again in fp32 and keeps doing so for that VAE (as AUTOMATIC1111 does).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from studio.settings import Settings

log = logging.getLogger(__name__)

ON_OFF_AUTO = ("auto", "on", "off")
VAE_UPCAST = ("auto", "always", "never")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TILED_DECODE_ABOVE = 1024  # px: under vae_tiling "auto", larger images go through the VAE in tiles
COMPILED_ROLES = ("unet",)  # the shared base UNet (txt2img, control, concepts, SeedSelect)


@dataclass
class SpeedOptions:
    """Resolved speed settings (no "auto" left except `vae_tiling`, decided per image)."""

    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"  # tests use "eager" (dynamo without code generation)
    vae_slicing: bool = True
    vae_tiling: str = "auto"
    vae_upcast: str = "auto"

    @classmethod
    def for_device(cls, device: torch.device) -> SpeedOptions:
        """The defaults (every option "auto") resolved for `device`."""
        return cls(channels_last=device.type == "cuda")

    @classmethod
    def from_settings(cls, settings: Settings, device: torch.device) -> SpeedOptions:
        """Resolve the settings' "auto" values for `device`."""
        channels_last = settings.channels_last
        return cls(
            channels_last=(device.type == "cuda") if channels_last == "auto"
            else channels_last == "on",
            compile=bool(settings.compile),
            compile_mode=settings.compile_mode,
            vae_slicing=bool(settings.vae_slicing),
            vae_tiling=settings.vae_tiling,
            vae_upcast=settings.vae_upcast,
        )


def prepare_component(role: str, module: Any, options: SpeedOptions,
                      device: torch.device) -> dict[str, Any]:
    """Apply the speed options to a freshly loaded model; returns what was applied (logged,
    kept in `ModelRegistry.speed_report`)."""
    if not isinstance(module, torch.nn.Module):
        return {}
    report: dict[str, Any] = {}
    if hasattr(module, "attn_processors"):
        report["attention"] = use_sdpa(module)
    if options.channels_last and (role.startswith("unet") or role.startswith("controlnet:")):
        module.to(memory_format=torch.channels_last)
        report["channels_last"] = True
    if role == "vae" and hasattr(module, "enable_tiling"):
        install_vae_policy(module, options)
        report["vae"] = {"slicing": options.vae_slicing, "tiling": options.vae_tiling,
                         "upcast": options.vae_upcast}
    if options.compile and role in COMPILED_ROLES:
        reason = compile_unavailable(device, options.compile_backend)
        if reason:
            log.warning("--compile is on but the %s is not compiled: %s. It runs as usual.",
                        role, reason)
            report["compiled"] = f"no: {reason}"
        else:
            compile_forward(module, options.compile_mode, options.compile_backend)
            report["compiled"] = options.compile_mode
    if report:
        log.info("speed path for %s: %s", role, report)
    return report


# ------------------------------------------------------------------ attention
def attention_summary(module: Any) -> dict[str, int]:
    """How many attention layers use each processor class, e.g. {"AttnProcessor2_0": 16}."""
    return dict(Counter(type(p).__name__ for p in module.attn_processors.values()))


def use_sdpa(module: Any) -> dict[str, int]:
    """Put torch's scaled_dot_product_attention (`AttnProcessor2_0`) where a layer still has
    the classic `AttnProcessor`; other processors (IP-Adapter, steering) are left alone.
    Returns the processor counts afterwards."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        procs = module.attn_processors
        if any(type(p) is AttnProcessor for p in procs.values()):
            sdpa = AttnProcessor2_0()
            module.set_attn_processor({name: sdpa if type(p) is AttnProcessor else p
                                       for name, p in procs.items()})
    else:
        log.warning("this torch has no scaled_dot_product_attention: attention is slow")
    return attention_summary(module)


# ------------------------------------------------------------------ torch.compile
def compile_unavailable(device: torch.device, backend: str = "inductor") -> str | None:
    """Why torch.compile cannot run here (None when it can)."""
    dynamo = getattr(torch, "_dynamo", None)
    if dynamo is None or not dynamo.is_dynamo_supported():
        return "torch.compile is not supported by this Python/torch build"
    if backend != "inductor":
        return None
    if device.type == "mps":
        return "torch.compile's inductor backend does not support MPS well yet"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton is not installed (pip install triton; not available on Windows)"
    elif device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "no C++ compiler found (inductor needs one on CPU)"
    return None


class CompiledForward:
    """A module's `forward` that runs compiled, except with gradients on, inside `eager()`,
    or after a compile failure (then eager for good, with one logged error)."""

    def __init__(self, forward: Any, mode: str, backend: str) -> None:
        self.eager_forward = forward
        kwargs: dict[str, Any] = {"backend": backend}
        if backend == "inductor" and mode != "default":
            kwargs["mode"] = mode
        self.compiled = torch.compile(forward, **kwargs)
        self.mode = mode
        self.bypass = 0  # eager() nesting depth
        self.failed: str | None = None
        self.calls = Counter()  # "compiled" / "eager" calls (tests and benchmarks read it)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.bypass or self.failed or torch.is_grad_enabled():
            self.calls["eager"] += 1
            return self.eager_forward(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any compiler error: run as usual instead
            if isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower():
                raise
            self.failed = f"{type(err).__name__}: {str(err)[:300]}"
            log.error("torch.compile of the UNet failed (%s); running it uncompiled from now "
                      "on", self.failed)
            self.calls["eager"] += 1
            return self.eager_forward(*args, **kwargs)
        self.calls["compiled"] += 1
        return out


_eager_lock = threading.Lock()


def compile_forward(module: torch.nn.Module, mode: str = "default",
                    backend: str = "inductor") -> CompiledForward:
    """Compile `module.forward` in place (lazily: the first call compiles)."""
    existing = compiled_forward(module)
    if existing is not None:
        return existing
    wrapper = CompiledForward(module.forward, mode, backend)
    module.forward = wrapper  # an instance attribute shadows the class's forward
    return wrapper


def compiled_forward(module: Any) -> CompiledForward | None:
    """The module's CompiledForward, or None when it runs uncompiled."""
    forward = getattr(module, "__dict__", {}).get("forward")
    return forward if isinstance(forward, CompiledForward) else None


def uncompile(module: Any) -> None:
    """Give the module its plain forward back."""
    if compiled_forward(module) is not None:
        del module.forward


@contextlib.contextmanager
def eager(module: Any) -> Iterator[None]:
    """Run `module` uncompiled inside the block (a no-op when it is not compiled)."""
    wrapper = compiled_forward(module)
    if wrapper is None:
        yield
        return
    with _eager_lock:
        wrapper.bypass += 1
    try:
        yield
    finally:
        with _eager_lock:
            wrapper.bypass -= 1


# ------------------------------------------------------------------ VAE
class VaePolicy:
    """Wraps a VAE's `encode`/`decode`: tiling chosen from the image size, and the fp16
    upcast. Counts what it did in `tiled` and `upcasts`."""

    def __init__(self, vae: Any, options: SpeedOptions) -> None:
        self.vae = vae
        self.tiling = options.vae_tiling
        self.upcast = options.vae_upcast
        self.always_fp32 = options.vae_upcast == "always"
        self.scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.plain_encode, self.plain_decode = vae.encode, vae.decode
        self.tiled = 0
        self.upcasts = 0

    def _choose_tiling(self, side_px: int) -> None:
        tile = self.tiling == "on" or (self.tiling == "auto" and side_px > TILED_DECODE_ABOVE)
        self.vae.use_tiling = tile
        self.tiled += int(tile)

    def encode(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self._choose_tiling(max(x.shape[-2:]))
        return self.plain_encode(x, *args, **kwargs)

    def decode(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self._choose_tiling(max(z.shape[-2:]) * self.scale)
        if self.vae.dtype != torch.float16 or self.upcast == "never":
            return self.plain_decode(z, *args, **kwargs)
        if self.always_fp32:
            return self._decode_fp32(z, *args, **kwargs)
        out = self.plain_decode(z, *args, **kwargs)
        if torch.isfinite(out[0]).all() or not torch.isfinite(z).all():
            return out  # fine, or the latents themselves are broken (fp32 cannot help)
        log.warning("the VAE gave NaN/inf in fp16 at %dx%d px: decoding in fp32 from now on",
                    z.shape[-1] * self.scale, z.shape[-2] * self.scale)
        self.always_fp32 = self.upcast == "auto"
        return self._decode_fp32(z, *args, **kwargs)

    def _decode_fp32(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Decode with the VAE in fp32 for this call (it goes back to fp16 after)."""
        from diffusers.models.autoencoders.vae import DecoderOutput

        self.upcasts += 1
        dtype = self.vae.dtype
        self.vae.to(torch.float32)
        try:
            out = self.plain_decode(z.float(), *args, **kwargs)
        finally:
            self.vae.to(dtype)
        sample = out[0].to(z.dtype)
        return (sample,) if isinstance(out, tuple) else DecoderOutput(sample=sample)


def install_vae_policy(vae: Any, options: SpeedOptions) -> VaePolicy:
    """Set slicing and route the VAE's encode/decode through a VaePolicy (once)."""
    if options.vae_slicing:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
    existing = getattr(vae, "studio_policy", None)
    if existing is not None:
        return existing
    policy = VaePolicy(vae, options)
    vae.encode, vae.decode = policy.encode, policy.decode
    vae.studio_policy = policy
    return policy
