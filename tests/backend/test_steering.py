"""Prompt-to-prompt and Attend-and-Excite on the tiny set: wiring, the shared UNet left
exactly as it was (after errors and cancels too), reproducibility and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from studio.backend.common import Cancelled, CancelToken
from studio.backend.requests import RequestError
from studio.backend.steering import tokens

BASE = {"prompt": "a red circle and a blue square", "seed": 7, "steps": 4, "width": 64,
        "height": 64}
EDIT = {**BASE, "edited_prompt": "a red circle and a green square"}


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def processors(studio) -> dict:
    return dict(studio.registry.component("unet").attn_processors)


def same_processors(before: dict, after: dict) -> bool:
    return before.keys() == after.keys() and all(after[k] is v for k, v in before.items())


def test_prompt_edit_returns_the_edit_and_saves_the_source(studio):
    result = studio.run("prompt_edit", dict(EDIT))
    source = result.extra_images[0]
    assert result.info["source"].endswith(".png") and result.info["cross_steps"] == 3
    assert (studio.outputs.root / result.info["source"]).is_file()
    assert not np.array_equal(px(result.image), px(source))  # the word changed something
    # the source is the seed's own picture: Text to image of the source prompt, same noise
    plain = studio.txt2img(dict(BASE)).image
    assert np.abs(px(source) - px(plain)).mean() < 2


def test_keeping_no_attention_is_a_plain_render_of_the_edited_prompt(studio):
    free = studio.run("prompt_edit", {**EDIT, "cross_replace": 0, "self_replace": 0})
    plain = studio.txt2img({**BASE, "prompt": EDIT["edited_prompt"]}).image
    kept = studio.run("prompt_edit", dict(EDIT))
    assert np.abs(px(free.image) - px(plain)).mean() < 2
    assert not np.array_equal(px(kept.image), px(plain))  # (random tiny attention: small)


def test_reweight_and_refine_change_the_edit(studio):
    plain = studio.txt2img(dict(BASE)).image
    weighed = studio.run("prompt_edit", {**BASE, "mode": "reweight", "reweight": '{"red": 3}'})
    assert not np.array_equal(px(weighed.image), px(plain))
    refined = studio.run("prompt_edit", {**BASE, "mode": "refine",
                                         "edited_prompt": "a red circle and a big blue square"})
    assert not np.array_equal(px(refined.image), px(plain))


def test_regenerating_a_prompt_edit_is_bit_identical(studio):
    first = studio.run("prompt_edit", {**EDIT, "local_blend": "square"})
    again = studio.regenerate(str(first.path))
    assert np.array_equal(px(first.image), px(again.image))


def test_the_shared_unet_is_untouched_after_each_method(studio):
    before_image = px(studio.txt2img(dict(BASE)).image)
    before = processors(studio)
    studio.run("prompt_edit", dict(EDIT))
    studio.txt2img({**BASE, "attend_excite": True})
    assert same_processors(before, processors(studio))
    assert np.array_equal(px(studio.txt2img(dict(BASE)).image), before_image)


@pytest.mark.parametrize("task", ["prompt_edit", "txt2img"])
def test_a_cancelled_run_restores_the_unet(studio, task):
    before_image = px(studio.txt2img(dict(BASE)).image)
    before = processors(studio)
    token = CancelToken()

    def progress(step: int, total: int) -> None:
        if step == 2:
            token.cancel()

    request = dict(EDIT) if task == "prompt_edit" else {**BASE, "attend_excite": True}
    with pytest.raises(Cancelled):
        studio.run(task, {**request, "steps": 6}, progress=progress, cancel=token)
    assert same_processors(before, processors(studio))
    assert np.array_equal(px(studio.txt2img(dict(BASE)).image), before_image)


def test_an_error_inside_the_run_restores_the_unet(studio, monkeypatch):
    from studio.backend.steering import p2p

    def broken(self, layer, probs):
        raise RuntimeError("boom")

    before = processors(studio)
    monkeypatch.setattr(p2p.PromptToPrompt, "attend", broken)
    with pytest.raises(RuntimeError, match="boom"):
        studio.run("prompt_edit", dict(EDIT))
    assert same_processors(before, processors(studio))


def test_attend_and_excite_moves_the_latent_and_reproduces(studio):
    plain = studio.txt2img(dict(BASE))
    excited = studio.txt2img({**BASE, "attend_excite": True})
    assert excited.info["excite_words"] == ["circle", "square"]
    assert excited.info["excite_updates"] >= 1
    assert not np.array_equal(px(excited.image), px(plain.image))
    again = studio.regenerate(str(excited.path))
    assert np.array_equal(px(excited.image), px(again.image))
    chosen = studio.txt2img({**BASE, "attend_excite": True, "excite_words": "red, blue"})
    assert chosen.info["excite_words"] == ["red", "blue"]


def test_attend_and_excite_in_layout(studio):
    boxes = [{"phrase": "a red circle", "box": [0.1, 0.1, 0.5, 0.5]}]
    plain = studio.layout({**BASE, "boxes": boxes})
    excited = studio.layout({**BASE, "boxes": boxes, "attend_excite": True})
    assert excited.info["excite_updates"] >= 1
    assert not np.array_equal(px(excited.image), px(plain.image))


def test_fast_mode_turns_attend_and_excite_off_with_a_note(studio):
    result = studio.txt2img({**BASE, "attend_excite": True, "fast": True})
    assert "off in fast mode" in result.info["attend_excite_note"]
    assert "excite_updates" not in result.info


@pytest.mark.parametrize(("changes", "message"), [
    ({"edited_prompt": "a red circle and a big blue square"}, "big"),
    ({"edited_prompt": ""}, "edited prompt"),
    ({"mode": "swap"}, "mode must be one of"),
    ({"cross_replace": 1.5}, "cross_replace"),
    ({"self_replace": -0.1}, "self_replace"),
    ({"mode": "reweight", "reweight": '{"snow": 2}'}, "'snow' is not a word of the prompt"),
    ({"mode": "reweight", "reweight": "{snow"}, "reweight must be a JSON object"),
    ({"mode": "reweight", "reweight": ""}, "needs reweight"),
    ({"reweight": '{"red": 2}'}, "only in mode"),
    ({"mode": "reweight", "reweight": '{"red": 99}'}, "factor of 'red'"),
    ({"local_blend": "dragon"}, "'dragon' is in neither prompt"),
])
def test_bad_prompt_edits_are_refused_clearly(studio, changes, message):
    with pytest.raises(RequestError, match=message):
        studio.run("prompt_edit", {**EDIT, **changes})


@pytest.mark.parametrize(("changes", "message"), [
    ({"attend_excite": "yes"}, "attend_excite must be true or false"),
    ({"attend_excite": True, "excite_words": "dragon"}, "'dragon' is not a word"),
])
def test_bad_excite_requests_are_refused_clearly(studio, changes, message):
    with pytest.raises(RequestError, match=message):
        studio.txt2img({**BASE, **changes})


def test_subjects_and_token_alignment(studio):
    assert tokens.subject_words("a red circle and a blue square") == ["circle", "square"]
    assert tokens.subject_words("a photo of a cat next to a dog, on a bench") == [
        "cat", "dog", "bench"]
    tokenizer = studio.registry.component("tokenizer")
    mapper, alphas = tokens.refine_mapper(tokenizer, "a red circle", "a big red circle", 77)
    # "big" is new (its own attention); the others take the source's, shifted by one
    assert alphas[:5] == [1.0, 1.0, 0.0, 1.0, 1.0] and mapper[:5] == [0, 1, 2, 2, 3]
    assert mapper[5] == 4 and mapper[76] == 75  # the end token and padding, shifted too


def test_an_excite_update_lowers_the_loss(studio):
    """The update is gradient descent on the paper's loss: one step lowers it."""
    import torch

    from studio.backend.common import base_pipeline
    from studio.backend.steering.excite import Excitation
    from studio.backend.steering.processors import steered

    pipe = base_pipeline(studio.registry)
    unet = pipe.unet
    excitation = Excitation(pipe, BASE["prompt"], "", steps=10)
    embeds = pipe.encode_prompt(BASE["prompt"], unet.device, 1, False)[0]
    call = {"encoder_hidden_states": embeds}
    latents = torch.randn(1, unet.config.in_channels, 8, 8,
                          generator=torch.Generator().manual_seed(0)).to(unet.dtype)
    timestep = torch.tensor(500)

    def same(x, t):
        return x

    with steered(unet, excitation.excite, excitation.select), torch.enable_grad():
        before = excitation.excite.loss(unet, latents, timestep, call, same).item()
        moved = excitation.excite.update(unet, latents, 1, timestep, call, same)
        after = excitation.excite.loss(unet, moved, timestep, call, same).item()
    assert not torch.equal(moved, latents) and after < before


def test_the_saved_source_regenerates_the_pair(studio):
    first = studio.run("prompt_edit", dict(EDIT))
    again = studio.regenerate(str(studio.outputs.root / first.info["source"]))
    assert np.array_equal(px(first.extra_images[0]), px(again.extra_images[0]))


def test_png_parameters_record_both_methods(studio):
    from studio.backend.outputs import read_metadata

    edit = studio.run("prompt_edit", {**EDIT, "local_blend": "square"})
    text, _ = read_metadata(edit.path)
    assert "Edited prompt: a red circle and a green square," in text
    assert "Prompt edit: replace cross 0.8 self 0.4 blend square" in text
    excited = studio.txt2img({**BASE, "attend_excite": True, "excite_words": "red, blue"})
    assert 'Attend-and-Excite: "red, blue"' in read_metadata(excited.path)[0]
