"""The GPU speed path on CPU: flags, channels_last, SDPA, VAE slicing/tiling/upcast, and
torch.compile (skipped with a log where unsupported, eager under steering, fallback on
failure)."""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter

import numpy as np
import pytest
import torch

from studio import settings as settings_module
from studio.backend.models import speed
from studio.backend.models.registry import ModelRegistry
from studio.backend.models.speed import SpeedOptions
from studio.settings import Settings, settings_from_args

GEN = {"prompt": "a red circle", "seed": 3, "steps": 2, "width": 64, "height": 64}
CL = torch.channels_last


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def registry_with(model_set, **options) -> ModelRegistry:
    return ModelRegistry(model_set, offline=True, speed=SpeedOptions(**options))


def txt2img(registry: ModelRegistry, **changes):
    from studio.backend.requests import Txt2ImgRequest
    from studio.backend.tasks.txt2img import run_txt2img

    req = Txt2ImgRequest(**{**GEN, **changes})
    req.validate()
    return run_txt2img(registry, req)[0]


# ------------------------------------------------------------------ flags
def test_speed_flags_parse_and_default_safely():
    s = settings_from_args([], env={})
    assert (s.channels_last, s.compile, s.compile_mode, s.vae_slicing, s.vae_tiling,
            s.vae_upcast) == ("auto", False, "default", True, "auto", "auto")
    s = settings_from_args(["--channels-last", "on", "--compile", "--compile-mode",
                            "reduce-overhead", "--no-vae-slicing", "--vae-tiling", "off",
                            "--vae-upcast", "always"], env={})
    assert (s.channels_last, s.compile, s.compile_mode, s.vae_slicing, s.vae_tiling,
            s.vae_upcast) == ("on", True, "reduce-overhead", False, "off", "always")
    s = settings_from_args([], env={"STUDIO_COMPILE": "1", "STUDIO_VAE_SLICING": "false"})
    assert s.compile is True and s.vae_slicing is False


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"channels_last": "yes"}, "--channels-last must be one of auto, on, off"),
    ({"vae_upcast": "sometimes"}, "--vae-upcast must be one of auto, always, never"),
    ({"compile_mode": "fast"}, "--compile-mode must be one of"),
])
def test_bad_speed_settings_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


def test_settings_and_backend_agree_on_the_choices():
    assert settings_module.ON_OFF_AUTO == speed.ON_OFF_AUTO
    assert settings_module.VAE_UPCAST == speed.VAE_UPCAST
    assert settings_module.COMPILE_MODES == speed.COMPILE_MODES


def test_channels_last_auto_means_cuda_only():
    auto = Settings()
    assert SpeedOptions.from_settings(auto, torch.device("cuda")).channels_last
    assert not SpeedOptions.from_settings(auto, torch.device("cpu")).channels_last
    assert not SpeedOptions.from_settings(auto, torch.device("mps")).channels_last
    forced = Settings(channels_last="on")
    assert SpeedOptions.from_settings(forced, torch.device("cpu")).channels_last
    assert not SpeedOptions.from_settings(Settings(channels_last="off"),
                                          torch.device("cuda")).channels_last


# ------------------------------------------------------------------ channels_last, SDPA
def test_channels_last_is_applied_and_changes_no_image(tiny_model_set):
    plain = registry_with(tiny_model_set)
    fast = registry_with(tiny_model_set, channels_last=True)
    unet, control = fast.component("unet"), fast.component("controlnet:canny")
    assert unet.conv_in.weight.is_contiguous(memory_format=CL)
    assert control.conv_in.weight.is_contiguous(memory_format=CL)
    assert not plain.component("unet").conv_in.weight.is_contiguous(memory_format=CL)
    assert fast.speed_report[fast.key("unet")]["channels_last"] is True
    a, b = px(txt2img(plain)), px(txt2img(fast))
    assert np.abs(a - b).max() <= 2  # same image up to float summation order


def test_every_attention_layer_uses_sdpa_and_is_reported(tiny_model_set):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    registry = registry_with(tiny_model_set)
    unet = registry.component("unet")
    report = registry.speed_report[registry.key("unet")]["attention"]
    assert report == {"AttnProcessor2_0": len(unet.attn_processors)}
    # a UNet left on the classic processor is switched; other processors stay as they are
    other = copy.deepcopy(unet)
    other.set_attn_processor(AttnProcessor())
    name = next(iter(other.attn_processors))
    custom = type("IPAdapterLikeProcessor", (AttnProcessor,), {})()
    other.set_attn_processor({n: custom if n == name else p
                              for n, p in other.attn_processors.items()})
    counts = speed.use_sdpa(other)
    assert counts == {"AttnProcessor2_0": len(unet.attn_processors) - 1,
                      "IPAdapterLikeProcessor": 1}
    assert isinstance(other.attn_processors[name], type(custom))
    assert all(isinstance(p, AttnProcessor2_0) for n, p in other.attn_processors.items()
               if n != name)


# ------------------------------------------------------------------ VAE
def small_vae(dtype: torch.dtype = torch.float32):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                         layers_per_block=1, norm_num_groups=4, sample_size=32).to(dtype).eval()


def test_vae_slicing_toggles_and_keeps_the_batch(tiny_model_set):
    on = registry_with(tiny_model_set).component("vae")
    off = registry_with(tiny_model_set, vae_slicing=False).component("vae")
    assert on.use_slicing and not off.use_slicing
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(on.decode(z).sample, off.decode(z).sample, atol=1e-5)


@pytest.mark.parametrize(("tiling", "side", "tiled"), [
    ("auto", 64, False), ("auto", 1088, True), ("on", 64, True), ("off", 1088, False)])
def test_vae_tiling_follows_the_setting_and_the_size(tiling, side, tiled):
    vae = small_vae()
    policy = speed.install_vae_policy(vae, SpeedOptions(vae_tiling=tiling))
    with torch.no_grad():
        out = vae.decode(torch.randn(1, 4, side // 2, 8)).sample
    assert out.shape[-2:] == (side, 16)
    assert vae.use_tiling is tiled and policy.tiled == int(tiled)


def overflowing_vae():
    """A VAE whose decoder overflows fp16 (65504) in its first convolution but not fp32, as
    SD-family VAEs do at some sizes; returns (fp16 VAE, the same weights in fp32)."""
    vae = small_vae()
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(1e5)
    half = copy.deepcopy(vae).to(torch.float16)
    return half, copy.deepcopy(half).float()


def test_an_fp16_vae_that_overflows_decodes_again_in_fp32():
    half, full = overflowing_vae()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.isfinite(half.decode(z.half()).sample).all()  # the failure is real
        policy = speed.install_vae_policy(half, SpeedOptions(vae_upcast="auto"))
        out = half.decode(z.half()).sample
        ref = full.decode(z).sample
        assert out.dtype == torch.float16 and half.dtype == torch.float16  # back to fp16
        assert torch.isfinite(out).all() and torch.allclose(out.float(), ref, atol=2e-3)
        assert policy.upcasts == 1 and policy.always_fp32  # sticky: fp32 from now on
        again = half.decode(z.half(), return_dict=False)[0]
        assert policy.upcasts == 2 and torch.isfinite(again).all()


def test_upcast_never_leaves_nan_and_broken_latents_are_not_retried():
    half, _ = overflowing_vae()
    z = torch.randn(1, 4, 8, 8).half()
    with torch.no_grad():
        never = speed.install_vae_policy(half, SpeedOptions(vae_upcast="never"))
        assert not torch.isfinite(half.decode(z).sample).all() and never.upcasts == 0
    half, _ = overflowing_vae()
    with torch.no_grad():
        auto = speed.install_vae_policy(half, SpeedOptions(vae_upcast="auto"))
        half.decode(torch.full_like(z, float("nan")))
        assert auto.upcasts == 0 and not auto.always_fp32


def test_upcast_always_decodes_in_fp32_at_once():
    half, full = overflowing_vae()
    policy = speed.install_vae_policy(half, SpeedOptions(vae_upcast="always"))
    calls = []
    plain = policy.plain_decode
    policy.plain_decode = lambda z, *a, **k: (calls.append(z.dtype), plain(z, *a, **k))[1]
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        out = half.decode(z.half()).sample
    assert calls == [torch.float32] and policy.upcasts == 1 and torch.isfinite(out).all()


# ------------------------------------------------------------------ torch.compile
def test_compile_is_skipped_with_a_clear_log_where_unsupported(tiny_model_set, monkeypatch,
                                                              caplog):
    assert "MPS" in speed.compile_unavailable(torch.device("mps"))
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    reason = speed.compile_unavailable(torch.device("cpu"))
    assert reason == "no C++ compiler found (inductor needs one on CPU)"
    with caplog.at_level(logging.WARNING, logger=speed.__name__):
        registry = registry_with(tiny_model_set, compile=True)
        unet = registry.component("unet")
    assert "--compile is on but the unet is not compiled: no C++ compiler" in caplog.text
    assert speed.compiled_forward(unet) is None
    assert registry.speed_report[registry.key("unet")]["compiled"].startswith("no: ")
    assert np.asarray(txt2img(registry)).std() > 0  # and it still generates


class _Boom(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


def test_a_compile_failure_falls_back_to_eager_once(caplog):
    module = _Boom()
    wrapper = speed.compile_forward(module, backend="eager")

    def fail(*args, **kwargs):
        raise RuntimeError("InductorError: no working compiler")

    wrapper.compiled = fail
    with torch.no_grad(), caplog.at_level(logging.ERROR, logger=speed.__name__):
        assert module(torch.zeros(1)).item() == 1
        assert module(torch.zeros(1)).item() == 1
    assert "running it uncompiled from now on" in caplog.text and wrapper.failed
    assert wrapper.calls == {"eager": 2}
    wrapper.failed = None

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    wrapper.compiled = oom
    with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):
        module(torch.zeros(1))  # out of memory is not a compiler failure: it propagates


def test_gradients_and_eager_blocks_bypass_the_compiled_forward():
    module = _Boom()
    wrapper = speed.compile_forward(module, backend="eager")
    with torch.no_grad():
        module(torch.zeros(1))
        with speed.eager(module):
            module(torch.zeros(1))
    module(torch.zeros(1, requires_grad=True))  # grad enabled (training): eager
    assert wrapper.calls == {"compiled": 1, "eager": 2}
    speed.uncompile(module)
    assert speed.compiled_forward(module) is None and module(torch.zeros(1)).item() == 1


@pytest.mark.slow
def test_compiled_unet_warms_up_and_steering_still_works(tiny_settings, tiny_model_set,
                                                         tmp_path):
    """torch.compile on this CPU: dynamo with the eager backend (inductor's C++ build of even
    the tiny UNet takes minutes on 2 cores; on a GPU bench/gpu.py runs inductor)."""
    from dataclasses import replace

    from torch._dynamo.utils import counters

    from studio.backend.service import Studio

    small = replace(tiny_model_set, native_size=GEN["width"])  # warm up at the tested size
    registry = registry_with(small, compile=True, compile_backend="eager")
    settings = Settings(models="tiny", cache_dir=tiny_settings.cache_dir, offline=True,
                        outputs_dir=tmp_path / "out", concepts_dir=tmp_path / "concepts",
                        compile=True)
    studio = Studio(settings, model_set=small, registry=registry)
    unet = registry.component("unet")
    wrapper = speed.compiled_forward(unet)
    assert wrapper is not None and studio.warm_up() > 0 and wrapper.calls["compiled"] >= 2
    t0 = time.perf_counter()
    compiled = studio.txt2img(dict(GEN)).image
    assert time.perf_counter() - t0 < 10  # compiled in the warm-up, not now
    eager_image = txt2img(registry_with(tiny_model_set))
    assert np.abs(px(compiled) - px(eager_image)).max() <= 2
    before = Counter(wrapper.calls)
    graphs = counters["stats"]["unique_graphs"]
    edit = studio.run("prompt_edit", {**GEN, "steps": 4, "edited_prompt": "a blue circle"})
    excite = studio.txt2img({**GEN, "steps": 4, "attend_excite": True})
    assert edit.image is not None and excite.info["excite_updates"] >= 1
    assert wrapper.calls["compiled"] == before["compiled"]  # steering ran uncompiled
    assert wrapper.calls["eager"] > before["eager"]
    again = studio.txt2img(dict(GEN)).image  # compiled again, processors restored
    assert wrapper.calls["compiled"] > before["compiled"] and wrapper.failed is None
    assert counters["stats"]["unique_graphs"] == graphs  # and it was not recompiled
    assert np.array_equal(px(again), px(compiled))
