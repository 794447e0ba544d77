"""Concepts on SDXL (the tiny SDXL set): an SDXL textual-inversion embedding as model sites
share it (`clip_l` + `clip_g`, one tensor per text encoder) and an SDXL LoRA import for the
chosen SDXL checkpoint, change the image where their token is written, and are refused by
name on an SD1.5 checkpoint (and the reverse)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from studio.backend.requests import RequestError
from studio.backend.service import Studio

XL = {"prompt": "a photo of <xl-thing> on a table", "seed": 6, "steps": 2, "width": 64,
      "height": 64, "model": "tiny-xl"}


@pytest.fixture(scope="module")
def studio_xl(tiny_settings, tiny_model_set, tmp_path_factory) -> Studio:
    tmp = tmp_path_factory.mktemp("xl-concepts")
    return Studio(replace(tiny_settings, outputs_dir=tmp / "out", concepts_dir=tmp / "lib"),
                  model_set=tiny_model_set)


def embedding(folder: Path, name: str, seed: int, widths: dict[str, int]) -> str:
    gen = torch.Generator().manual_seed(seed)
    path = folder / f"{name}.safetensors"
    save_file({k: torch.randn(2, w, generator=gen) for k, w in widths.items()}, str(path))
    return str(path)


def px(result) -> np.ndarray:
    return np.asarray(result.image, np.int16)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("xl-embeddings")
    return {
        "xl": embedding(d, "xl-thing", 1, {"clip_l": 32, "clip_g": 48}),
        "xl_other": embedding(d, "xl-other", 2, {"clip_l": 32, "clip_g": 48}),
        "xl_wrong": embedding(d, "xl-wrong", 3, {"clip_l": 32, "clip_g": 40}),
        "sd15": embedding(d, "sd-thing", 4, {"emb_params": 32}),
    }


def test_an_sdxl_embedding_learns_its_token_in_both_text_encoders(studio_xl, files):
    info = studio_xl.import_concept(files["xl"], "xl-thing", model="tiny-xl")
    assert info["family"] == "sdxl" and info["vectors"] == 2
    studio_xl.import_concept(files["xl_other"], "xl-other", model="tiny-xl")
    with_token = px(studio_xl.txt2img(XL))
    without = px(studio_xl.txt2img({**XL, "prompt": "a photo of on a table"}))
    other = px(studio_xl.txt2img({**XL, "prompt": XL["prompt"].replace("thing", "other")}))
    assert np.abs(with_token - without).mean() > 0.5
    assert np.abs(with_token - other).mean() > 0.5  # the vectors matter, not the word
    assert np.array_equal(with_token, px(studio_xl.txt2img(XL)))  # loaded once, reproducible
    with studio_xl.exclusive("inspect", model="tiny-xl"):  # the SDXL models, as a job sees
        for role in ("tokenizer", "tokenizer_2"):
            assert "<xl-thing>" in studio_xl.registry.component(role).get_vocab(), role


def test_it_is_refused_by_name_on_an_sd15_model(studio_xl, files):
    studio_xl.import_concept(files["xl"], "xl-thing2", model="tiny-xl")
    with pytest.raises(RequestError, match="was made for sdxl models and these are SD1.5"):
        studio_xl.txt2img({**XL, "prompt": "a <xl-thing2>", "model": ""})


@pytest.mark.parametrize(("key", "model", "fragment"), [
    ("xl", "", "this is an SDXL embedding (clip_g, clip_l) and the models are SD1.5"),
    ("sd15", "tiny-xl", "holds one text encoder's vectors (SD1.5's format)"),
    ("xl_wrong", "tiny-xl", "vectors of size 40 but the text encoder of the current models "
                            "uses 48"),
])
def test_embeddings_of_another_family_are_refused_at_import(studio_xl, files, key, model,
                                                           fragment):
    with pytest.raises(RequestError) as err:
        studio_xl.import_concept(files[key], f"bad-{key.replace('_', '-')}", model=model)
    assert fragment in str(err.value)
    assert not any(c["name"].startswith("bad-") for c in studio_xl.list_concepts())


def test_an_sdxl_lora_imports_for_sdxl_and_changes_the_image(studio_xl, tiny_xl_model_set):
    lora = Path(tiny_xl_model_set.get("lcm_lora")) / "pytorch_lora_weights.safetensors"
    info = studio_xl.import_concept(str(lora), "xl-style", model="tiny-xl")
    assert info["family"] == "sdxl" and info["method"] == "lora"
    styled = px(studio_xl.txt2img({**XL, "prompt": "a cat <xl-style>"}))
    plain = px(studio_xl.txt2img({**XL, "prompt": "a cat"}))
    assert np.abs(styled - plain).mean() > 0.5
    with pytest.raises(RequestError, match="was made for sdxl models"):
        studio_xl.txt2img({**XL, "prompt": "a cat <xl-style>", "model": "tiny"})


def _pictures() -> list:
    from PIL import Image, ImageDraw

    out = []
    for i in range(3):
        img = Image.new("RGB", (64, 64), (240, 240, 235))
        ImageDraw.Draw(img).ellipse((12 + 3 * i, 12, 50, 50), fill=(140, 50, 180))
        out.append(img)
    return out


@pytest.mark.slow
def test_textual_inversion_trains_on_sdxl_in_both_text_encoders(studio_xl):
    """The token is learned in clip_l and clip_g (the SDXL file layout model sites share),
    the loss on a fixed probe drops, and the token then changes the SDXL image."""
    from safetensors.torch import load_file

    made = studio_xl.concept_train({
        "name": "xl-learned", "images": _pictures(), "method": "textual_inversion",
        "initializer": "circle", "steps": 6, "learning_rate": 0.05, "resolution": 64,
        "seed": 2, "model": "tiny-xl"})
    concept = next(c for c in studio_xl.list_concepts() if c["name"] == "xl-learned")
    assert concept["family"] == "sdxl"
    folder = studio_xl.concepts.get("xl-learned").folder
    state = load_file(str(next(folder.glob("*.safetensors"))))
    assert {k: tuple(v.shape) for k, v in state.items()} == {"clip_l": (1, 32),
                                                             "clip_g": (1, 48)}
    probes = [loss for _, loss in made.info["training"]["probe_losses"]]
    assert probes[-1] < probes[0]
    with_token = px(studio_xl.txt2img({**XL, "prompt": "a photo of <xl-learned>"}))
    word = px(studio_xl.txt2img({**XL, "prompt": "a photo of circle"}))
    assert np.abs(with_token - word).mean() > 0.5


@pytest.mark.slow
def test_lora_trains_on_the_sdxl_unet(studio_xl):
    made = studio_xl.concept_train({
        "name": "xl-lora", "images": _pictures(), "method": "lora", "initializer": "circle",
        "steps": 4, "learning_rate": 1e-3, "rank": 2, "resolution": 64, "seed": 2,
        "model": "tiny-xl"})
    assert made.info["training"]["probe_losses"]
    styled = px(studio_xl.txt2img({**XL, "prompt": "a photo of <xl-lora>"}))
    plain = px(studio_xl.txt2img({**XL, "prompt": "a photo of circle"}))
    assert np.abs(styled - plain).mean() > 0.5
    with pytest.raises(RequestError, match="was made for sdxl models"):
        studio_xl.txt2img({**XL, "prompt": "a photo of <xl-lora>", "model": "tiny"})
