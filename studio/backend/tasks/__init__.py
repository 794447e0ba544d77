"""The task table: every endpoint of the named API, registered once.

A row names the endpoint (its API name), the UI tab it lives in (a module of `studio.ui`), what
it takes besides the common parameters (the README's endpoint table is rendered from it), and,
for generating tasks, the request dataclass and the runner. From this table the `Studio` gets
one method per generating task and `regenerate` its dispatch, the UI its tabs, and the tests
the API contract and the README check.

Adding a task: a request class and a runner in a module here, one row below, a tab module in
`studio/ui/`, and tests (README "Adding a task").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..concepts.request import ConceptTrainRequest
from ..concepts.seedselect import SeedSelectRequest, seedselect_runner
from ..requests import Txt2ImgRequest
from .control import ControlRequest, control_runner
from .inpaint import InpaintRequest, inpaint_runner
from .instruct import InstructRequest, instruct_runner
from .layout import LayoutRequest, layout_runner
from .outpaint import OutpaintRequest, outpaint_runner
from .prompt_edit import PromptEditRequest, run_prompt_edit
from .remix import RemixRequest, remix_runner
from .txt2img import txt2img_runner
from .upscale import UpscaleRequest, upscale_runner

# UI tabs in order: module name in studio.ui -> title.
TABS = {
    "txt2img": "Text to image",
    "control": "Control",
    "layout": "Layout",
    "edit": "Edit",
    "instruct": "Instruct",
    "remix": "Remix",
    "concepts": "Concepts",
    "upscale": "Upscale",
}
# Tabs built by studio.ui.app itself after those (they read saved images, not a task).
SAVED_IMAGE_TABS = {"pnginfo": "PNG info", "outputs": "Outputs"}


@dataclass(frozen=True)
class Task:
    """One endpoint: `/<name>` in the API, shown in tab `tab` ("" = every tab)."""

    name: str
    tab: str
    params: str  # what it takes besides the common parameters (README, Markdown)
    request: type | None = None  # generating tasks: the request dataclass ...
    runner: Callable[..., tuple[Any, dict[str, Any]]] | None = None  # ... and its runner
    note: str = ""  # a word on the tab column (e.g. "preview")

    @property
    def generates(self) -> bool:
        """True for tasks the Studio runs, saves and regenerates from a stored request."""
        return self.runner is not None


# the hires fix parameters that Text to image, Control and Layout take after `model`
HIRES = ("; then the optional trailing `model`, `hires_scale` (1..4, 1 = off, default 1), "
         "`hires_upscaler` (`latent` (default), `lanczos`, `none` or an upscaler model's name), "
         "`hires_denoise` (0..1, default 0.5), `hires_steps` (0 = as the first pass), "
         "`hires_prompt` (empty = the same): hires fix, a second img2img pass at the enlarged "
         "size; info has `hires` with both sizes")


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("txt2img", "txt2img",
         "`attend_excite` (Attend-and-Excite, default false), `excite_words` (subjects, "
         "comma-separated; empty = picked from the prompt)" + HIRES, Txt2ImgRequest,
         txt2img_runner),
    Task("prompt_edit", "txt2img",
         "`edited_prompt`, `mode` (`replace`, `refine`, `reweight`), `reweight` (JSON "
         "`{\"word\": factor}`), `cross_replace`, `self_replace` (0..1), `local_blend` (words); "
         "info has `source`, the source image's file", PromptEditRequest, run_prompt_edit),
    Task("annotate", "control",
         "`image`, `annotator` (`canny`, `depth`, `openpose`, `scribble`), `resolution`; "
         "info has OpenPose `keypoints`", note="preview"),
    Task("control", "control",
         "`images` (files), `units` (JSON list aligned with `images`: `{\"type\", \"weight\", "
         "\"start\", \"end\", \"preprocess\", \"resize_mode\", \"resolution\", "
         "\"control_mode\", \"model\"}`; `model` `\"union\"`: ControlNet Union, SDXL), "
         "`init_image`, "
         "`strength`, `reference_images` (files, 0-4: a style/content reference through "
         "IP-Adapter), `reference_scale` (0..1.5, default 0.6)" + HIRES
         + " (the second pass keeps the units, their maps resized)", ControlRequest,
         control_runner),
    Task("layout", "layout",
         "`boxes` (JSON list of `{\"phrase\", \"box\": [x0, y0, x1, y1]}` in 0..1), "
         "`gligen_fraction`, `image`, `mode` (`generate` or `inside_boxes`), `append_phrases`, "
         "`attend_excite`, `excite_words`" + HIRES + " (mode `generate`; the second pass is "
         "plain img2img, without the boxes)", LayoutRequest, layout_runner),
    Task("sam_mask", "edit",
         "`image`, `points` (JSON `[[x, y, label], ...]` in image pixels, label 1 = object, "
         "0 = background), `box` (JSON `[x0, y0, x1, y1]` or empty)"),
    Task("text_mask", "edit",
         "`image`, `text` (what to select; several things separated by `.`), `threshold` "
         "(0..1, default 0.3); info has `boxes` (`[x0, y0, x1, y1]` in image pixels), "
         "`labels`, `scores`"),
    Task("inpaint", "edit",
         "`image`, `mask` (white = change), `only_masked`, `padding`, `mask_blur`, `strength`, "
         "`mode` (`inpaint` or `blend`)", InpaintRequest, inpaint_runner),
    Task("outpaint", "edit",
         "`image`, `left`, `right`, `top`, `bottom` (pixels to add on each side, 0-2048), "
         "`mask_blur` (seam feather in px outside the original, default 8), `mode` "
         "(`inpaint` or `blend`); the original pixels are kept exactly",
         OutpaintRequest, outpaint_runner),
    Task("instruct", "instruct",
         "`image`, `instruction`, `text_guidance`, `image_guidance`, `max_side` (instead of "
         "width/height), `tools` (default true: 'mark the cat in red' is answered by a text "
         "mask and an overlay, no model call)", InstructRequest, instruct_runner),
    Task("remix", "remix",
         "`images` (files, 1-4), `weights` (JSON list aligned with `images`, non-negative, "
         "not all zero; empty = equal), `text_from`, `text_to` (captions for a text diff, "
         "both or neither), `text_amount` (0..1), `image_scale` (0..1.5); `prompt` may be "
         "empty", RemixRequest, remix_runner),
    Task("concept_train", "concepts",
         "`name` (the token, e.g. `<my-dog>`), `images`, `method` (`textual_inversion`, "
         "`lora`, `seedselect`), `steps`, method options", ConceptTrainRequest),
    Task("concepts", "concepts", "— (returns the library as JSON)"),
    Task("concept_import", "concepts",
         "`file` (`.safetensors` textual inversion or LoRA; SDXL embeddings as `clip_l` + "
         "`clip_g`), `name`, `model` (import for that checkpoint's family; empty = the "
         "default)"),
    Task("seedselect", "concepts", "`prompt`, `images`, `steps`, `semantic_weight`, `bootstrap`",
         SeedSelectRequest, seedselect_runner),
    Task("upscale", "upscale",
         "`image`, `scale` (1..8, default 2), `upscaler` (`lanczos` (default), `none` = "
         "nearest neighbour, or an upscaler model's name: the tab's list, or A1111's "
         "`GET /sdapi/v1/upscalers`); no diffusion, none of the common parameters",
         UpscaleRequest, upscale_runner),
    Task("cancel", "", "— (stops this client's running generation at its next step)"),
    Task("models", "", "— (returns JSON `[{name, family, source}]`: the checkpoints every "
         "generating endpoint's trailing `model` parameter may name; `source` is `builtin`, "
         "`hub` or `file`, never a path; the default first)"),
    Task("history", "outputs",
         "`limit` (1..500, default 50), `query` (text matched in prompt, task and model; "
         "default empty), `offset` (default 0); returns JSON `[{file, task, prompt, seed, "
         "model, created}]`, newest first"),
)}


def generating_tasks() -> list[Task]:
    """The tasks with a runner (each is a Studio method and can be regenerated)."""
    return [t for t in TASKS.values() if t.generates]


def readme_table() -> str:
    """The README's endpoint table, rendered from TASKS."""
    rows = ["| endpoint | tab | parameters (besides the common ones) |", "|---|---|---|"]
    for t in TASKS.values():
        tab = {**TABS, **SAVED_IMAGE_TABS}.get(t.tab, "all") + (f" ({t.note})" if t.note else "")
        rows.append(f"| `/{t.name}` | {tab} | {t.params} |")
    return "\n".join(rows)
