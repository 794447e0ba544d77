"""Concept library: textual inversion, LoRA, restart, import, errors, cancel (tiny models).

Every test builds Studios with their own registry (like the `fresh_studio` fixture) on a temp
concept library, because learning a concept changes the shared tokenizer/text encoder/UNet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from studio.backend.common import Cancelled, CancelToken, base_pipeline
from studio.backend.requests import RequestError

GEN = {"seed": 5, "steps": 2, "width": 64, "height": 64}
TRAIN = {"resolution": 64, "seed": 0, "preview_steps": 0, "initializer": "dog"}


class Tripwire:
    """Unpickling this writes a file: proof that a pickle was opened at all."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.marker),))


def examples(n: int = 3) -> list[Image.Image]:
    """A few 64 px pictures of "the same thing" (a red disc on varying backgrounds)."""
    out = []
    for i in range(n):
        img = Image.new("RGB", (72, 64), (40 + 50 * i, 180, 90))
        ImageDraw.Draw(img).ellipse((12 + 3 * i, 10, 52, 50), fill=(220, 30, 40))
        out.append(img)
    return out


def px(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


@pytest.fixture()
def make_studio(tiny_settings, tiny_model_set, tmp_path):
    """Build Studios with their own registry on a concept library under tmp_path."""
    from studio.backend.service import Studio
    from studio.settings import Settings

    def make(library: str = "concepts") -> Studio:
        settings = Settings(models="tiny", cache_dir=tiny_settings.cache_dir, offline=True,
                            outputs_dir=tmp_path / "outputs", concepts_dir=tmp_path / library)
        return Studio(settings, model_set=tiny_model_set)

    return make


def train(studio, name: str, method: str, **options):
    return studio.concept_train({**TRAIN, "name": name, "images": examples(),
                                 "method": method, **options})


# ---------------------------------------------------------------------------- learning
def test_textual_inversion_lowers_loss_and_changes_only_the_new_row(make_studio) -> None:
    studio = make_studio()
    pipe = base_pipeline(studio.registry)
    before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    n = len(pipe.tokenizer)
    result = train(studio, "my-dog", "textual_inversion", steps=16, learning_rate=0.01)
    assert result.path is None  # preview off
    # The random tiny UNet barely listens to text, so the per-step training loss is noise;
    # the loss on a fixed probe batch (fixed noise and timesteps) shows the progress.
    probe = [v for _, v in result.info["training"]["probe_losses"]]
    assert probe[-1] < probe[0] - 1e-4
    assert np.mean(probe[-3:]) < probe[0]
    assert len(pipe.tokenizer) == n  # training leaves the shared tokenizer alone

    studio.txt2img({**GEN, "prompt": "a photo of <my-dog>"})  # first use loads the token
    weight = pipe.text_encoder.get_input_embeddings().weight
    assert len(pipe.tokenizer) == n + 1 and weight.shape[0] == n + 1
    assert torch.equal(weight[:n], before)  # every existing row unchanged
    embedding = studio.concepts_dir / result.info["concept"]["files"]["embedding"]
    learned = load_file(embedding)["<my-dog>"]
    new_row = weight[pipe.tokenizer.convert_tokens_to_ids("<my-dog>")]
    assert torch.allclose(new_row, learned[0])
    dog = before[pipe.tokenizer.encode("dog", add_special_tokens=False)].mean(0)
    assert (learned[0] - dog).abs().max() > 1e-3  # it moved away from the initializer
    studio.txt2img({**GEN, "prompt": "<my-dog> again"})
    assert studio.registry.stats["concept_embedding_load"] == 1  # loaded once


def test_lora_lowers_loss_and_leaves_base_weights_unchanged(make_studio) -> None:
    studio = make_studio()
    unet = base_pipeline(studio.registry).unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    plain_prompt = {**GEN, "prompt": "a photo of a dog"}
    plain = px(studio.txt2img(plain_prompt))
    result = train(studio, "my-cat", "lora", steps=24, learning_rate=0.03, batch_size=4)
    losses = result.info["training"]["losses"]
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.01
    probe = [v for _, v in result.info["training"]["probe_losses"]]
    assert probe[-1] < probe[0] - 0.01
    after = unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(px(studio.txt2img(plain_prompt)), plain)
    # the diffusers LoRA format that `load_lora_weights` reads
    keys = list(load_file(studio.concepts_dir / result.info["concept"]["files"]["lora"]))
    assert keys and all(k.startswith("unet.") and ".lora" in k for k in keys)
    with_token = px(studio.txt2img({**GEN, "prompt": "a photo of a dog <my-cat>"}))
    assert np.abs(with_token - plain).mean() > 0.5
    # loaded now, but off again whenever the prompt does not mention it
    assert np.array_equal(px(studio.txt2img(plain_prompt)), plain)


def _control(studio, prompt: str):
    canny = Image.new("RGB", (64, 64))
    ImageDraw.Draw(canny).rectangle((16, 16, 48, 48), outline=(255, 255, 255), width=2)
    return studio.control({**GEN, "prompt": prompt, "units": [{"type": "canny", "image": canny}]})


@pytest.mark.parametrize("method", ["textual_inversion", "lora"])
def test_saved_concept_reloads_after_restart_and_changes_outputs(make_studio, method) -> None:
    first = make_studio()
    train(first, "rare-bird", method, steps=4, learning_rate=0.05)
    del first
    again = make_studio()  # same library folder, new registry: a restart
    assert [c["token"] for c in again.list_concepts()] == ["<rare-bird>"]
    assert again.registry.hooks and again.registry.stats["load"] == 0  # hook only, no model
    without = make_studio("empty-library")
    prompt = "a photo of <rare-bird> on a tree"
    assert np.abs(px(again.txt2img({**GEN, "prompt": prompt}))
                  - px(without.txt2img({**GEN, "prompt": prompt}))).mean() > 0.5
    other = {**GEN, "prompt": "a photo of a bird on a tree"}
    assert np.array_equal(px(again.txt2img(other)), px(without.txt2img(other)))
    assert np.abs(px(_control(again, prompt)) - px(_control(without, prompt))).mean() > 0.5


# ---------------------------------------------------------------------------- cancel
@pytest.mark.parametrize("method", ["textual_inversion", "lora", "seedselect"])
def test_cancel_mid_training_leaves_library_and_models_clean(make_studio, method) -> None:
    studio = make_studio()
    pipe = base_pipeline(studio.registry)
    n = len(pipe.tokenizer)
    cancel, seen = CancelToken(), []

    def progress(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            cancel.cancel()

    with pytest.raises(Cancelled, match="Cancelled"):
        studio.concept_train({**TRAIN, "name": "half-done", "images": examples(),
                              "method": method, "steps": 40, "sample_steps": 2,
                              "bootstrap": 0}, progress=progress, cancel=cancel)
    assert max(seen) < 40
    assert studio.list_concepts() == []
    folder = studio.concepts_dir
    assert not folder.exists() or list(folder.iterdir()) == []  # no partial or temp folder
    assert len(pipe.tokenizer) == n
    assert not getattr(pipe.unet, "peft_config", None)  # the training adapter is gone
    train(studio, "half-done", method, steps=2, sample_steps=2, bootstrap=0)
    assert [c["name"] for c in studio.list_concepts()] == ["half-done"]


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": []}, "0 example images given; upload at least 3"),
        ({"images": None}, "0 example images given"),
        ({"name": "My Dog!"}, "invalid concept name/token 'My Dog!'"),
        ({"name": "<a b>"}, "invalid concept name/token"),
        ({"name": ""}, "the concept needs a name"),
        ({"method": "dreambooth"}, "unknown training method 'dreambooth'"),
        ({"images": [b"not an image"] * 3}, "image 1 could not be read as an image"),
        ({"images": [Image.new("RGB", (32, 32))] * 3}, "at least 64 px per side"),
        ({"steps": 10**6}, "steps must be between 0 and 5000"),
        ({"rank": 0}, "rank must be between 1 and 128"),
        ({"resolution": 100}, "resolution must be a multiple of 8"),
        ({"initializer": "  "}, "set initializer"),
    ],
)
def test_bad_training_requests_get_clear_errors(make_studio, change, message) -> None:
    studio = make_studio()
    req = {**TRAIN, "name": "ok-name", "images": examples(), "method": "textual_inversion",
           "steps": 2, **change}
    with pytest.raises(RequestError, match=message):
        studio.concept_train(req)
    assert studio.list_concepts() == []


def test_non_image_files_are_named_in_the_error(make_studio, tmp_path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("these are words, not pixels")
    images = examples(2) + [str(notes)]
    with pytest.raises(RequestError, match="image 3 could not be read as an image"):
        make_studio().concept_train({**TRAIN, "name": "x", "images": images})


def test_duplicate_name_is_refused(make_studio, tmp_path) -> None:
    studio = make_studio()
    path = tmp_path / "emb.safetensors"
    save_file({"emb_params": torch.randn(1, 32)}, str(path))
    studio.import_concept(path, "twin")
    with pytest.raises(RequestError, match="a concept named 'twin' already exists"):
        studio.import_concept(path, "twin")
    with pytest.raises(RequestError, match="already exists"):
        train(studio, "<twin>", "textual_inversion", steps=2)
    assert [c["name"] for c in studio.list_concepts()] == ["twin"]


def test_pickles_are_refused_without_being_opened(make_studio, tmp_path) -> None:
    """Only safetensors are imported: a pickle is refused by name, never unpickled (not
    even weights-only, whose guard CVE-2025-32434 bypassed)."""
    studio = make_studio()
    marker = tmp_path / "unpickled"
    for name, payload in (("evil.pt", Tripwire(str(marker))),
                          ("plain.pt", {"string_to_param": {"*": torch.randn(2, 32)}}),
                          ("lora.bin", {"lora_unet_x.lora_up.weight": torch.zeros(2, 2)})):
        torch.save(payload, tmp_path / name)
        with pytest.raises(RequestError, match=f"'{name}' was refused: it is a pickled file"):
            studio.import_concept(tmp_path / name, "")
    assert not marker.exists()
    other = tmp_path / "weights.ckpt.txt"
    other.write_text("x")
    with pytest.raises(RequestError, match="unsupported type"):
        studio.import_concept(other, "other")
    assert studio.list_concepts() == []


# ---------------------------------------------------------------------------- import
def _lcm_lora_file(tiny_model_set) -> str:
    from pathlib import Path

    return str(next(Path(tiny_model_set.get("lcm_lora")).glob("*.safetensors")))


def _kohya(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from diffusers.utils import convert_state_dict_to_kohya

    unet = {k.removeprefix("unet."): v for k, v in state.items()}
    return {f"lora_unet_{k}": v for k, v in convert_state_dict_to_kohya(unet).items()}


def test_imported_embeddings_and_loras_apply_by_token(make_studio, tmp_path,
                                                      tiny_model_set) -> None:
    studio, without = make_studio(), make_studio("empty-library")
    files = {
        "a1111-st": ({"emb_params": torch.randn(1, 32)}, "textual_inversion"),
        "diffusers-ti": ({"<whatever>": torch.randn(32)}, "textual_inversion"),
        "kohya-lora": (_kohya(load_file(_lcm_lora_file(tiny_model_set))), "lora"),
    }
    for name, (state, _) in files.items():
        save_file(state, str(tmp_path / f"{name}.safetensors"))
        studio.import_concept(tmp_path / f"{name}.safetensors", name)
    studio.import_concept(_lcm_lora_file(tiny_model_set), "diffusers-lora")
    listed = {c["name"]: c["method"] for c in studio.list_concepts()}
    assert listed == {**{n: m for n, (_, m) in files.items()}, "diffusers-lora": "lora"}
    for name in listed:
        prompt = {**GEN, "prompt": f"a red circle <{name}>"}
        diff = np.abs(px(studio.txt2img(prompt)) - px(without.txt2img(prompt))).mean()
        assert diff > 0.5, name
    # several at once, and none when no token is written
    both = {**GEN, "prompt": "<kohya-lora> and <a1111-st>"}
    assert np.abs(px(studio.txt2img(both)) - px(without.txt2img(both))).mean() > 0.5
    plain = {**GEN, "prompt": "a red circle"}
    assert np.array_equal(px(studio.txt2img(plain)), px(without.txt2img(plain)))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"emb_params": torch.randn(1, 768)}, "vectors of size 768"),
        ({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)}, "SDXL embedding"),
        ({"a": torch.randn(3), "b": torch.randn(3)}, "not a textual-inversion embedding"),
        ({"lora_te_text_model_x.lora_down.weight": torch.randn(4, 32),
          "lora_te_text_model_x.lora_up.weight": torch.randn(32, 4)}, "only text-encoder"),
    ],
)
def test_unusable_files_are_refused_clearly(make_studio, tmp_path, state, message) -> None:
    studio = make_studio()
    path = tmp_path / "thing.safetensors"
    save_file(state, str(path))
    with pytest.raises(RequestError, match=message):
        studio.import_concept(path, "thing")
    assert studio.list_concepts() == []


def test_library_on_disk_is_one_folder_per_concept(make_studio, tmp_path) -> None:
    studio = make_studio()
    train(studio, "shape", "textual_inversion", steps=2)
    folder = studio.concepts_dir / "shape"
    meta = json.loads((folder / "concept.json").read_text())
    assert meta["token"] == "<shape>" and meta["method"] == "textual_inversion"
    assert sorted(p.name for p in (folder / "thumbnails").iterdir()) == [
        "00.png", "01.png", "02.png"]
    assert Image.open(folder / "thumbnails" / "00.png").size == (64, 64)  # centre crop
    assert Image.open(folder / "examples" / "00.png").size == (64, 64)
    assert [p.name for p in studio.concepts_dir.iterdir()] == ["shape"]  # no temp folders
    listed = studio.list_concepts()[0]
    assert listed["thumbnails"][0].endswith("00.png")
    studio.concepts.delete("shape")
    assert studio.list_concepts() == [] and not folder.exists()


def test_embeddings_are_reapplied_after_a_model_reload_or_a_new_version(make_studio,
                                                                         tmp_path) -> None:
    studio = make_studio()
    gen = torch.Generator().manual_seed(0)
    first_file, second_file = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"emb_params": torch.randn(1, 32, generator=gen)}, str(first_file))
    save_file({"emb_params": torch.randn(1, 32, generator=gen)}, str(second_file))
    prompt = {**GEN, "prompt": "a photo of <twin>"}
    studio.import_concept(first_file, "twin")
    first = px(studio.txt2img(prompt))
    studio.registry.free_memory()  # on CPU the text encoder is dropped, then reloaded
    assert np.array_equal(px(studio.txt2img(prompt)), first)
    studio.concepts.delete("twin")
    studio.import_concept(second_file, "twin")  # same token, new vectors
    second = px(studio.txt2img(prompt))
    assert np.abs(second - first).mean() > 0.5
    pipe = base_pipeline(studio.registry)
    row = pipe.text_encoder.get_input_embeddings().weight[
        pipe.tokenizer.convert_tokens_to_ids("<twin>")]
    assert torch.allclose(row, load_file(second_file)["emb_params"][0])
