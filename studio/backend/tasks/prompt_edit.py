"""Prompt-to-prompt editing: the same picture with a word changed, kept, or weighted.

Renders the source prompt and the edited prompt in one batch from the same starting noise
(the seed's, as Text to image draws it), with `steering.p2p` giving the edited image the
source's attention. Returns the edited image; the source is saved next to it (`source` in
info).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from ..common import (
    CancelToken,
    ProgressFn,
    TaskContext,
    base_pipeline,
    configure_pipe,
    cpu_generator,
    effective_steps_guidance,
    run_guarded,
    step_callback,
    text_options,
)
from ..requests import (
    GenerationParams,
    RequestError,
    check_number,
    check_prompt,
    loads_json,
)
from ..steering import tokens
from ..steering.p2p import EditPlan, PromptToPrompt
from ..steering.processors import map_factor, steered

MODES = ("replace", "refine", "reweight")
MAX_REWEIGHT = 10.0
MAX_REWEIGHT_WORDS = 8


@dataclass
class PromptEditRequest(GenerationParams):
    """A prompt-to-prompt edit of `prompt` (the source) into `edited_prompt`."""

    edited_prompt: str = ""
    mode: str = "replace"
    reweight: Any = ""  # JSON object (or dict) word -> factor
    cross_replace: float = 0.8
    self_replace: float = 0.4
    local_blend: str = ""

    task: ClassVar[str] = "prompt_edit"

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise RequestError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_prompt("edited prompt", self.edited_prompt, self.mode != "reweight")
        check_number("cross_replace", self.cross_replace, 0, 1)
        check_number("self_replace", self.self_replace, 0, 1)
        check_prompt("local_blend", self.local_blend, False)
        self.reweight = parse_reweight(self.reweight)
        if self.mode == "reweight" and not self.reweight:
            raise RequestError('mode "reweight" needs reweight, a JSON object of word -> '
                               'factor, e.g. {"snow": 2.0}')
        if self.mode != "reweight" and self.reweight:
            raise RequestError(f'reweight is used only in mode "reweight", not {self.mode!r}')
        self.cross_replace, self.self_replace = float(self.cross_replace), float(
            self.self_replace)

    def work(self) -> float:
        return 2 * super().work()  # the source and the edit in one batch


def parse_reweight(value: Any) -> dict[str, float]:
    """`{"word": factor}` from a dict or its JSON text ("" = none)."""
    if value in (None, "", {}):
        return {}
    if isinstance(value, str):
        try:
            value = loads_json(value, "reweight")
        except json.JSONDecodeError as err:
            raise RequestError(f'reweight must be a JSON object like {{"snow": 2.0}} ({err.msg} '
                               f"at character {err.pos})") from None
    if not isinstance(value, dict):
        raise RequestError(f'reweight must be a JSON object like {{"snow": 2.0}}, got {value!r}')
    if len(value) > MAX_REWEIGHT_WORDS:
        raise RequestError(f"reweight at most {MAX_REWEIGHT_WORDS} words, got {len(value)}")
    out = {}
    for word, factor in value.items():
        if not isinstance(word, str) or not tokens.words(word):
            raise RequestError(f"reweight: {word!r} is not a word")
        check_number(f"reweight factor of {word!r}", factor, -MAX_REWEIGHT, MAX_REWEIGHT)
        out[word] = float(factor)
    return out


def edit_plan(tokenizer: Any, req: PromptEditRequest, steps: int) -> EditPlan:
    """Token positions for the edit, with clear errors for words that are not there."""
    edited = req.edited_prompt or req.prompt
    length = tokenizer.model_max_length
    if req.mode == "refine":
        mapper, alphas = tokens.refine_mapper(tokenizer, req.prompt, edited, length)
    else:
        tokens.check_same_length(tokenizer, req.prompt, edited)
        mapper, alphas = list(range(length)), [1.0] * length
    equalizer = None
    if req.reweight:
        equalizer = [1.0] * length
        for word, factor in req.reweight.items():
            spots = tokens.positions_of(tokenizer, edited, word)
            if not spots:
                raise RequestError(f"reweight: {word!r} is not a word of the prompt "
                                   f"{edited!r}")
            for spot in spots:
                equalizer[spot] = factor
    blend_source: list[int] = []
    blend_edited: list[int] = []
    for word in [w.strip() for w in req.local_blend.split(",") if w.strip()]:
        a = tokens.positions_of(tokenizer, req.prompt, word)
        b = tokens.positions_of(tokenizer, edited, word)
        if not a and not b:
            raise RequestError(f"local_blend: {word!r} is in neither prompt; name words of "
                               "the prompt or the edited prompt, separated by commas")
        blend_source += a
        blend_edited += b
    return EditPlan(cross_steps=round(req.cross_replace * steps),
                    self_steps=round(req.self_replace * steps), mapper=mapper, alphas=alphas,
                    equalizer=equalizer, blend_source=blend_source, blend_edited=blend_edited)


def run_prompt_edit(ctx: TaskContext, req: PromptEditRequest, progress: ProgressFn | None,
                    cancel: CancelToken | None) -> tuple[Any, dict[str, Any]]:
    """The edited image; info names the saved source image."""
    registry = ctx.registry
    pipe = base_pipeline(registry)
    configure_pipe(registry, pipe, req, "unet")
    steps, guidance = effective_steps_guidance(req)
    plan = edit_plan(pipe.tokenizer, req, steps)
    unet = pipe.unet
    controller = PromptToPrompt(plan, map_factor(unet), unet.device)
    report = step_callback(steps, progress, cancel)

    def callback(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        controller.step = step + 1
        kwargs["latents"] = controller.blend(kwargs["latents"], steps)
        return report(pipeline, step, timestep, kwargs)

    def call() -> Any:
        return pipe(
            prompt=[req.prompt, req.edited_prompt or req.prompt],
            negative_prompt=[req.negative_prompt] * 2 if req.negative_prompt else None,
            **text_options(pipe, req),
            num_inference_steps=steps, guidance_scale=guidance, width=req.width,
            height=req.height,
            # one generator per image, both seeded alike: the starting noise and every
            # ancestral sampler's step noise are the same for both, and as Text to image's
            generator=[cpu_generator(req.seed), cpu_generator(req.seed)],
            callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"],
        )

    def touched(layer: Any) -> bool:  # every cross layer; self-attention where it is coarse
        return layer.cross or layer.factor >= controller.map_factor

    with steered(unet, controller, touched):
        out = run_guarded(registry, call, cancel)
    source, edited = out.images
    # saved with the edit's request (regenerating it re-runs the pair) and marked as the source
    source_file = ctx.outputs.save(source, req.to_dict(), ctx.model_name, {"output": "source"})
    info = {"steps_run": steps, "guidance_run": guidance,
            "source": ctx.outputs.name_of(source_file),
            "cross_steps": plan.cross_steps, "self_steps": plan.self_steps,
            "extra_images": [source]}
    return edited, info
