"""Measure what the toy world's models do, through the studio's own backend and pipelines.

Every check generates images with a `Studio` on the `toy` model set, exactly as the UI and API
do, and judges them with the classical analyser (`toyworld.analyse`) against the scene that
was asked for. The semantic tests (`tests/semantic/`) assert thresholds on these numbers; the
command line prints them as the README's table:

    python -m toyworld.evaluate                  # every check, 48 cases each
    python -m toyworld.evaluate txt2img layout   # some of them
    python -m toyworld.evaluate --examples assets/toy-examples.png
    python -m toyworld.evaluate --set toy-xl     # the toy world on SDXL's architecture

Evaluation scenes use seeds far from the training seeds (see `EVAL_SEED`), so they are new.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from studio.backend.requests import RequestError

from .analyse import Found, analyse, foreground, iou
from .scenes import (
    COLOURS,
    COMMON_COLOURS,
    HELD_OUT_SHAPE,
    RARE_COLOUR,
    SHAPES,
    SIZE,
    Scene,
    Shape,
    random_scene,
)

EVAL_SEED = 900_000_000  # training uses seeds below 100 million
STEPS = 20
CFG = 7.5


@dataclass
class Evaluation:
    """The outcome of one check: rates in [0, 1] (and a few other numbers) over `n` cases."""

    name: str
    n: int
    metrics: dict[str, float]
    seconds_per_image: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:.0%}" if 0 <= v <= 1 and not k.startswith("mean")
                          else f"{k} {v:.3g}" for k, v in self.metrics.items())
        return f"{self.name} (n={self.n}): {parts}; {self.seconds_per_image:.2f} s/image"


class _Timer:
    def __init__(self) -> None:
        self.seconds, self.images = 0.0, 0

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, timed."""
        t0 = time.perf_counter()
        out = fn(*args)
        self.seconds += time.perf_counter() - t0
        self.images += 1
        return out

    @property
    def per_image(self) -> float:
        return self.seconds / max(1, self.images)


def _params(seed: int, **extra: Any) -> dict[str, Any]:
    return {"seed": seed, "steps": STEPS, "guidance_scale": CFG, "width": SIZE,
            "height": SIZE, **extra}


def _largest(found: list[Found]) -> Found | None:
    return found[0] if found else None


def scene_mask(scene: Scene) -> np.ndarray:
    """Union of every shape's mask: where the scene has objects."""
    out = np.zeros((scene.size, scene.size), bool)
    for i in range(len(scene.shapes)):
        out |= scene.mask(i)
    return out


def box_mask(box: tuple[int, int, int, int], grow: int = 0, size: int = SIZE) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((size, size), bool)
    m[max(0, y0 - grow):min(size, y1 + grow), max(0, x0 - grow):min(size, x1 + grow)] = True
    return m


def single_shape_prompts(n: int) -> list[tuple[str, str, int]]:
    """(colour, kind, seed) cycling over every common colour and shape."""
    combos = [(c, k) for c in COMMON_COLOURS for k in SHAPES]
    return [(*combos[i % len(combos)], EVAL_SEED + i) for i in range(n)]


# ---------------------------------------------------------------------------- checks

def eval_txt2img(studio: Any, n: int = 48) -> Evaluation:
    """"a <colour> <shape>": is the largest object of that colour, and of that shape?"""
    timer, colour_ok, shape_ok, one = _Timer(), 0, 0, 0
    for colour, kind, seed in single_shape_prompts(n):
        image = timer(studio.txt2img, _params(seed, prompt=f"a {colour} {kind}")).image
        found = analyse(image)
        top = _largest(found)
        colour_ok += bool(top and top.colour == colour)
        shape_ok += bool(top and top.shape == kind)
        one += len(found) == 1
    return Evaluation("txt2img", n, {"colour right": colour_ok / n, "shape right": shape_ok / n,
                                     "exactly one object": one / n}, timer.per_image)


def eval_control(studio: Any, n: int = 48) -> Evaluation:
    """A scribble (even cases) or an edge map (odd cases) of a new scene, with its caption:
    the IoU of the generated objects with the scene's shapes."""
    timer, ious = _Timer(), []
    for i in range(n):
        scene = random_scene(EVAL_SEED + 1000 + i)
        control = scene.scribble() if i % 2 == 0 else scene.edges()
        unit = {"type": "scribble" if i % 2 == 0 else "canny", "image": control}
        image = timer(studio.control,
                      _params(EVAL_SEED + i, prompt=scene.caption, units=[unit])).image
        ious.append(iou(foreground(image), scene_mask(scene)))
    arr = np.array(ious)
    return Evaluation("control", n, {"IoU >= 0.6": float((arr >= 0.6).mean()),
                                     "mean IoU": float(arr.mean())}, timer.per_image)


def _in_box(found: list[Found], shape: Shape, colour_too: bool) -> bool:
    x0, y0, x1, y1 = shape.box
    return any(x0 <= f.centroid[0] < x1 and y0 <= f.centroid[1] < y1
               and (not colour_too or f.colour == shape.colour) for f in found)


def eval_layout(studio: Any, n: int = 48, chance_n: int = 12) -> Evaluation:
    """Boxes of a new scene with their phrases and its caption as the prompt: does an object
    of the phrase's colour land with its centre inside each box? The same prompts without
    boxes (plain txt2img, same seeds) on the first `chance_n` scenes give the chance level."""
    timer, boxes = _Timer(), 0
    inside = inside_colour = chance = chance_boxes = 0
    for i in range(n):
        scene = random_scene(EVAL_SEED + 2000 + i)
        params = _params(EVAL_SEED + i, prompt=scene.caption)
        image = timer(studio.layout, {**params, "boxes": scene.boxes()}).image
        found = analyse(image)
        plain = analyse(studio.txt2img(params).image) if i < chance_n else None
        for shape in scene.shapes:
            boxes += 1
            inside += _in_box(found, shape, colour_too=False)
            inside_colour += _in_box(found, shape, colour_too=True)
            if plain is not None:
                chance_boxes += 1
                chance += _in_box(plain, shape, colour_too=True)
    return Evaluation("layout", n, {
        "object in its box": inside / boxes, "right colour in its box": inside_colour / boxes,
        "without boxes (chance)": chance / max(1, chance_boxes),
    }, timer.per_image, {"boxes": boxes, "chance_boxes": chance_boxes})


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255)


def eval_inpaint(studio: Any, n: int = 48) -> Evaluation:
    """Mask one shape of a new scene (its box grown by 3 px) and prompt another colour and
    shape: is the object inside the mask of the prompted colour (and shape), and is every pixel
    outside the mask unchanged?"""
    timer, colour_ok, shape_ok, kept = _Timer(), 0, 0, 0
    for i in range(n):
        rng = random.Random(EVAL_SEED + 3000 + i)
        scene = random_scene(EVAL_SEED + 3000 + i)
        target = rng.randrange(len(scene.shapes))
        old = scene.shapes[target]
        colour = rng.choice([c for c in COMMON_COLOURS if c != old.colour])
        kind = rng.choice(SHAPES)
        mask = box_mask(old.box, grow=3)
        source = scene.render()
        result = timer(studio.inpaint, _params(
            EVAL_SEED + i, prompt=f"a {colour} {kind}", image=source, mask=_mask_image(mask),
            mask_blur=1)).image
        out = np.asarray(result.convert("RGB"))
        kept += bool(np.array_equal(out[~mask], np.asarray(source)[~mask]))
        inside = [f for f in analyse(out) if mask[int(f.centroid[1]), int(f.centroid[0])]]
        top = _largest(inside)
        colour_ok += bool(top and top.colour == colour)
        shape_ok += bool(top and top.shape == kind)
    return Evaluation("inpaint", n, {"right colour in mask": colour_ok / n,
                                     "right shape in mask": shape_ok / n,
                                     "outside unchanged": kept / n}, timer.per_image)


OUTPAINT_SIDES = ("right", "left", "bottom", "top")


def eval_outpaint(studio: Any, n: int = 16) -> Evaluation:
    """Extend a new scene by 32 px (right, left, bottom, top in turn) asking for "a blue
    square": does the new area hold a blue square (and the right colour, the right shape),
    and is the original 64 x 64 bit-exact?"""
    timer, both, colour_ok, shape_ok, kept = _Timer(), 0, 0, 0, 0
    for i in range(n):
        scene = random_scene(EVAL_SEED + 7000 + i, max_shapes=2)
        side = OUTPAINT_SIDES[i % len(OUTPAINT_SIDES)]
        source = scene.render()
        result = timer(studio.outpaint, _params(EVAL_SEED + i, prompt="a blue square",
                                                image=source, **{side: 32}))
        out = np.asarray(result.image.convert("RGB"))
        x0, y0, x1, y1 = result.info["original_box"]
        kept += bool(np.array_equal(out[y0:y1, x0:x1], np.asarray(source)))
        new = np.ones(out.shape[:2], bool)
        new[y0:y1, x0:x1] = False
        found = [f for f in analyse(out) if new[int(f.centroid[1]), int(f.centroid[0])]]
        colour_ok += any(f.colour == "blue" for f in found)
        shape_ok += any(f.shape == "square" for f in found)
        both += any(f.colour == "blue" and f.shape == "square" for f in found)
    return Evaluation("outpaint", n, {"blue square in the new area": both / n,
                                      "blue in the new area": colour_ok / n,
                                      "square in the new area": shape_ok / n,
                                      "original bit-exact": kept / n}, timer.per_image)


SKETCH_RADIUS = 7


def sketch_spot(scene: Scene, rng: random.Random) -> tuple[int, int] | None:
    """A centre for a sketched blob clear of the scene's shapes (None if none is found)."""
    taken = scene_mask(scene)
    r = SKETCH_RADIUS + 3
    for _ in range(100):
        x, y = rng.randint(r, SIZE - r - 1), rng.randint(r, SIZE - r - 1)
        if not taken[y - r:y + r, x - r:x + r].any():
            return x, y
    return None


def eval_sketch(studio: Any, n: int = 16, strength: float = 0.75,
                mode: str = "inpaint", prompt: str = "a square") -> Evaluation:
    """Inpaint sketch: paint a green blob where nothing is, prompt "a square" (no colour);
    the painted area is the mask and the painted image the start: is a green object drawn
    there (and a square)?"""
    timer, green, square, cases = _Timer(), 0, 0, 0
    for i in range(4 * n):
        if cases == n:
            break
        rng = random.Random(EVAL_SEED + 8000 + i)
        scene = random_scene(EVAL_SEED + 8000 + i, max_shapes=2)
        spot = sketch_spot(scene, rng)
        if spot is None:
            continue
        cases += 1
        x, y = spot
        painted = scene.render()
        mask = Image.new("L", painted.size, 0)
        blob = (x - SKETCH_RADIUS, y - SKETCH_RADIUS, x + SKETCH_RADIUS, y + SKETCH_RADIUS)
        ImageDraw.Draw(painted).ellipse(blob, fill=COLOURS["green"])
        ImageDraw.Draw(mask).ellipse(blob, fill=255)
        out = np.asarray(timer(studio.inpaint, _params(
            EVAL_SEED + i, prompt=prompt, image=painted, mask=mask, mode=mode,
            strength=strength, mask_blur=1)).image.convert("RGB"))
        near = box_mask(blob, grow=3)
        found = [f for f in analyse(out) if near[int(f.centroid[1]), int(f.centroid[0])]]
        green += any(f.colour == "green" for f in found)
        square += any(f.colour == "green" and f.shape == "square" for f in found)
    cases = max(1, cases)
    return Evaluation("sketch", cases, {"green object where painted": green / cases,
                                        "green square there": square / cases},
                      timer.per_image, notes={"strength": strength, "mode": mode,
                                              "prompt": prompt})


def eval_instruct(studio: Any, n: int = 48) -> Evaluation:
    """"make it <colour>" on new one-shape scenes: is the object now that colour, still in
    place (IoU with the original shape >= 0.6)?"""
    timer, colour_ok, kept, both = _Timer(), 0, 0, 0
    for i in range(n):
        rng = random.Random(EVAL_SEED + 4000 + i)
        scene = random_scene(EVAL_SEED + 4000 + i, max_shapes=1)
        colour = rng.choice([c for c in COMMON_COLOURS if c != scene.shapes[0].colour])
        image = timer(studio.instruct, _params(
            EVAL_SEED + i, prompt=f"make it {colour}", image=scene.render())).image
        top = _largest(analyse(image))
        ok_colour = bool(top and top.colour == colour)
        ok_place = bool(top and iou(top.mask, scene.mask(0)) >= 0.6)
        colour_ok += ok_colour
        kept += ok_place
        both += ok_colour and ok_place
    return Evaluation("instruct", n, {"right colour": colour_ok / n, "shape IoU >= 0.6": kept / n,
                                      "both": both / n}, timer.per_image)


def eval_instruct_named(studio: Any, n: int = 24) -> Evaluation:
    """"make the <shape> <colour>" on new scenes of 2-3 shapes of different kinds: is the named
    shape recoloured while the others keep their colour?"""
    timer, named_ok, others_ok, cases = _Timer(), 0, 0, 0
    seed = EVAL_SEED + 5000
    while cases < n:
        seed += 1
        scene = random_scene(seed)
        kinds = [s.kind for s in scene.shapes]
        if len(kinds) < 2 or len(set(kinds)) != len(kinds):
            continue
        rng = random.Random(seed)
        index = rng.randrange(len(kinds))
        colour = rng.choice([c for c in COMMON_COLOURS if c != scene.shapes[index].colour])
        after, instruction = scene.recoloured(index, colour)
        image = timer(studio.instruct, _params(seed, prompt=instruction,
                                               image=scene.render())).image
        found = analyse(image)
        checks = []
        for j, shape in enumerate(after.shapes):
            where = scene.mask(j)
            best = max(found, key=lambda f, where=where: iou(f.mask, where), default=None)
            checks.append(bool(best and iou(best.mask, where) >= 0.5
                               and best.colour == shape.colour))
        named_ok += checks[index]
        others_ok += all(c for j, c in enumerate(checks) if j != index)
        cases += 1
    return Evaluation("instruct (named shape)", n, {
        "named shape recoloured": named_ok / n, "other shapes kept": others_ok / n,
    }, timer.per_image)


def concept_examples(kind: str, colour: str, count: int = 5) -> list[Image.Image]:
    """`count` pictures of one shape (a concept to learn), at varied sizes and places."""
    rng = random.Random(EVAL_SEED + 6000)
    out = []
    for _ in range(count):
        size = rng.randint(20, 28)
        h = size // 2 + 1
        out.append(Scene([Shape(kind, colour, rng.randint(h, SIZE - h),
                                rng.randint(h, SIZE - h), size)]).render())
    return out


def held_out_examples(count: int = 5) -> list[Image.Image]:
    """Pictures of the shape no diffusion model was trained on (red crosses)."""
    return concept_examples(HELD_OUT_SHAPE, "red", count)


def _learn_and_draw(studio: Any, name: str, images: list[Image.Image], steps: int,
                    n: int, want: Callable[[Found | None], bool],
                    baseline_prompt: str) -> tuple[float, float, float]:
    """Textual inversion of `images` as <name>, then n images of "a <name>" and n of
    `baseline_prompt`: (rate `want` with the token, rate with the baseline, s/image)."""
    studio.concept_train({"name": name, "images": images, "method": "textual_inversion",
                          "steps": steps, "initializer": "square", "seed": 0,
                          "preview_steps": 0})
    timer, learned, plain = _Timer(), 0, 0
    try:
        for i in range(n):
            image = timer(studio.txt2img, _params(EVAL_SEED + i, prompt=f"a <{name}>")).image
            learned += want(_largest(analyse(image)))
            image = studio.txt2img(_params(EVAL_SEED + i, prompt=baseline_prompt)).image
            plain += want(_largest(analyse(image)))
    finally:
        studio.concepts.delete(name)
    return learned / n, plain / n, timer.per_image


def eval_textual_inversion(studio: Any, n: int = 16, steps: int = 300) -> Evaluation:
    """Learn a concept from 5 pictures as one new token (green triangles, starting from the
    word "square"): how often does "a <token>" draw it, against "a square"?"""
    learned, plain, sec = _learn_and_draw(
        studio, "toy-concept-eval", concept_examples("triangle", "green"), steps, n,
        lambda f: bool(f and f.colour == "green" and f.shape == "triangle"), "a square")
    return Evaluation("textual inversion", n, {"concept with the learned token": learned,
                                               "concept with the initializer word": plain}, sec)


def eval_held_out_shape(studio: Any, n: int = 16, steps: int = 300) -> Evaluation:
    """Textual inversion of the held-out shape (red crosses). Reported, not asserted: a token
    can only steer the frozen UNet to what it can already draw, and it never drew a cross."""
    learned, plain, sec = _learn_and_draw(
        studio, f"toy-{HELD_OUT_SHAPE}-eval", held_out_examples(), steps, n,
        lambda f: bool(f and f.shape == HELD_OUT_SHAPE), f"a red {HELD_OUT_SHAPE}")
    return Evaluation("textual inversion (held-out cross)", n, {
        "cross with the learned token": learned, "cross with the plain word": plain}, sec)


RARE_PROMPT = f"a green square and a {RARE_COLOUR} triangle"


def rare_examples(count: int = 5) -> list[Image.Image]:
    """Pictures of RARE_PROMPT: a green square and a purple triangle, placed at random."""
    rng = random.Random(EVAL_SEED + 7000)
    out: list[Image.Image] = []
    while len(out) < count:
        shapes = []
        for kind, colour in (("square", "green"), ("triangle", RARE_COLOUR)):
            size = rng.randint(18, 26)
            h = size // 2 + 1
            shapes.append(Shape(kind, colour, rng.randint(h, SIZE - h), rng.randint(h, SIZE - h),
                                size))
        a, b = shapes
        if abs(a.cx - b.cx) > (a.size + b.size) // 2 + 2 or \
                abs(a.cy - b.cy) > (a.size + b.size) // 2 + 2:
            out.append(Scene(shapes).render())
    return out


def eval_seedselect(studio: Any, seeds: int = 6, bootstrap: int = 0, plain: int = 0,
                    steps: int = 30, sample_steps: int = 10) -> Evaluation:
    """The rare colour where the toy base still drops it: in RARE_PROMPT the purple triangle
    often comes out in another colour or not at all. For each of `seeds` seeds, the image of
    its own starting noise (what SeedSelect starts from: the same sampler, DDIM with
    `sample_steps`) against SeedSelect's (5 examples; z_T optimised for `steps` iterations,
    learning rate 0.3, each with `bootstrap` variants). `plain` > 0 also reports the rate of
    that many plain seeds at the tabs' 20 steps, for comparison.

    The semantic (CLIP) loss alone is used (semantic_weight 1): the examples put the two
    shapes in different places, so the centroid of their latents, the appearance target, is a
    blur of both that pulls against any one layout."""
    timer, selected, total, same_seed, fixed, misses = _Timer(), 0, 0, 0, 0, 0
    examples = rare_examples()
    for i in range(seeds):
        seed = EVAL_SEED + 100 + i
        start = _has_rare(studio.txt2img(_params(seed, prompt=RARE_PROMPT, scheduler="DDIM",
                                                 steps=sample_steps)).image)
        result = timer(studio.seedselect, {
            "prompt": RARE_PROMPT, "images": examples, "seed": seed, "steps": steps,
            "bootstrap": bootstrap, "width": SIZE, "height": SIZE, "semantic_weight": 1.0,
            "learning_rate": 0.3, "sample_steps": sample_steps})
        hits = [_has_rare(image) for image in [result.image, *result.extra_images]]
        selected, total, same_seed = selected + sum(hits), total + len(hits), same_seed + start
        misses += not start
        fixed += (not start) and hits[0]
    metrics = {"start noise (same seeds)": same_seed / seeds, "SeedSelect": selected / total,
               "misses fixed": fixed / max(1, misses)}
    if plain:
        metrics["plain seeds"] = sum(
            _has_rare(studio.txt2img(_params(EVAL_SEED + i, prompt=RARE_PROMPT,
                                             scheduler="DDIM")).image)
            for i in range(plain)) / plain
    return Evaluation("seedselect", total, metrics, timer.per_image,
                      {"plain_n": plain, "prompt": RARE_PROMPT, "misses": misses})


def _has_rare(image: Image.Image) -> bool:
    return any(f.colour == RARE_COLOUR and f.shape == "triangle" for f in analyse(image))


SWAP_SOURCE = "a red circle and a blue square"
SWAP_EDIT = "a red circle and a green square"
THREE = "a red circle and a blue square and a yellow triangle"


def eval_word_swap(studio: Any, n: int = 12) -> Evaluation:
    """Prompt-to-prompt word swap: SWAP_SOURCE -> SWAP_EDIT at the same seed. The edit keeps
    the source's layout (foreground IoU >= 0.7) and the square turns green; a plain
    same-seed render of the edited prompt, for comparison, rarely keeps the layout."""
    timer, kept, green, plain_kept = _Timer(), 0, 0, 0
    for i in range(n):
        params = _params(EVAL_SEED + 200 + i, prompt=SWAP_SOURCE)
        result = timer(studio.run, "prompt_edit", {**params, "edited_prompt": SWAP_EDIT})
        source = foreground(result.extra_images[0])
        plain = studio.txt2img({**params, "prompt": SWAP_EDIT}).image
        kept += iou(source, foreground(result.image)) >= 0.7
        plain_kept += iou(source, foreground(plain)) >= 0.7
        green += any(f.colour == "green" and f.shape == "square" for f in analyse(result.image))
    return Evaluation("word_swap", n, {"layout kept": kept / n, "square turned green": green / n,
                                       "plain same-seed render keeps layout": plain_kept / n},
                      timer.per_image)


def colour_share(image: Image.Image, colour: str) -> float:
    """Share of the foreground pixels nearest to `colour` of the palette."""
    arr = np.asarray(image.convert("RGB"), np.float32)
    mask = foreground(arr)
    if not mask.any():
        return 0.0
    names = list(COLOURS)
    palette = np.array([COLOURS[c] for c in names], np.float32)
    nearest = np.argmin(np.linalg.norm(arr[mask][:, None] - palette[None], axis=-1), axis=1)
    return float((nearest == names.index(colour)).mean())


def eval_reweight(studio: Any, n: int = 8, factor: float = 2.0) -> Evaluation:
    """Prompt-to-prompt reweighting: "red" x `factor` in SWAP_SOURCE raises red's share of
    the foreground pixels over the source image's (same seed, same batch)."""
    timer, source_share, edit_share, raised = _Timer(), 0.0, 0.0, 0
    for i in range(n):
        params = _params(EVAL_SEED + 250 + i, prompt=SWAP_SOURCE)
        result = timer(studio.run, "prompt_edit", {**params, "mode": "reweight",
                                                   "reweight": {"red": factor}})
        a, b = colour_share(result.extra_images[0], "red"), colour_share(result.image, "red")
        source_share, edit_share, raised = source_share + a, edit_share + b, raised + (b > a)
    return Evaluation("reweight", n, {"red share, source": source_share / n,
                                      f"red share, red x{factor:g}": edit_share / n,
                                      "red share raised": raised / n}, timer.per_image)


def eval_attend_excite(studio: Any, n: int = 16, words: str = "") -> Evaluation:
    """Attend-and-Excite on THREE: all three colours drawn, plain vs excited, same seeds;
    also how far the update lowered the loss (the most neglected subject's 1 - max
    attention) from its first to its last update step."""
    timer, plain, excited, drop = _Timer(), 0, 0, 0.0
    need = {"red", "blue", "yellow"}
    for i in range(n):
        params = _params(EVAL_SEED + 300 + i, prompt=THREE)
        plain += need <= {f.colour for f in analyse(studio.txt2img(params).image)}
        result = timer(studio.txt2img, {**params, "attend_excite": True, "excite_words": words})
        excited += need <= {f.colour for f in analyse(result.image)}
        losses = result.info.get("excite_losses") or [0.0]
        drop += losses[0] - min(losses)
    return Evaluation("attend_excite", n, {"all three, plain": plain / n,
                                           "all three, Attend-and-Excite": excited / n,
                                           "loss lowered by": drop / n}, timer.per_image,
                      {"prompt": THREE, "excite_words": words or "(automatic)"})


REMIX = {"prompt": "", "image_scale": 1.0}  # Remix's image prompt alone: no text prompt
TEXT_DIFF = ("a red circle", "a blue circle")
TEXT_AMOUNT = 0.7  # the toy IP-Adapter: 0.5 turns 25% blue, 0.6 92%, 0.7 100% (12 seeds)


def one_shape(kind: str, colour: str, seed: int) -> Image.Image:
    """A picture of one shape at a seeded place and size (what a user would upload)."""
    rng = random.Random(seed)
    size = rng.randint(18, 30)
    return Scene([Shape(kind, colour, rng.randint(size // 2 + 2, SIZE - size // 2 - 2),
                        rng.randint(size // 2 + 2, SIZE - size // 2 - 2), size)]).render()


def _is(image: Image.Image, colour: str, kind: str) -> bool:
    top = _largest(analyse(image))
    return bool(top and top.colour == colour and top.shape == kind)


def eval_remix_variation(studio: Any, n: int = 12) -> Evaluation:
    """Remix variations: a picture of one shape (every common colour and shape in turn, at
    new places) and no prompt: does the new image show the same colour and shape?"""
    timer, both, colour_ok = _Timer(), 0, 0
    for colour, kind, seed in single_shape_prompts(n):
        picture = one_shape(kind, colour, seed)
        image = timer(studio.run, "remix", _params(seed, images=[picture], **REMIX)).image
        top = _largest(analyse(image))
        colour_ok += bool(top and top.colour == colour)
        both += _is(image, colour, kind)
    return Evaluation("remix_variation", n, {"colour and shape kept": both / n,
                                             "colour kept": colour_ok / n}, timer.per_image)


def eval_remix_interpolation(studio: Any, n: int = 12, length: int = 5) -> Evaluation:
    """Remix interpolation: a strip of `length` from a red circle (weights [1, 0]) to a blue
    square ([0, 1]), one seed per strip. Each end must be its picture; along the strip
    the blue share of the foreground should rise monotonically, by more than half overall
    (a dip of 5 points between neighbours is allowed: the share is coarse)."""
    timer, ends, monotone, middle = _Timer(), 0, 0, 0.0
    for i in range(n):
        seed = EVAL_SEED + 500 + i
        a = one_shape("circle", "red", seed)
        b = one_shape("square", "blue", seed + 1)
        shares, images = [], []
        for j in range(length):
            t = j / (length - 1)
            image = timer(studio.run, "remix", _params(
                seed, images=[a, b], weights=[1 - t, t], **REMIX)).image
            images.append(image)
            shares.append(colour_share(image, "blue"))
        ends += _is(images[0], "red", "circle") + _is(images[-1], "blue", "square")
        rising = all(b >= a - 0.05 for a, b in zip(shares, shares[1:], strict=False))
        monotone += rising and shares[-1] - shares[0] > 0.5
        middle += shares[length // 2]
    return Evaluation("remix_interpolation", n, {
        "ends right": ends / (2 * n), "strip monotone": monotone / n,
        "blue share at the middle": middle / n}, timer.per_image, {"strip": length})


def eval_remix_text_diff(studio: Any, n: int = 12, amount: float = TEXT_AMOUNT) -> Evaluation:
    """Remix text diff: a red circle moved from "a red circle" to "a blue circle" by
    `amount`: a blue circle? Also how often the picture alone (no diff) is a red circle."""
    timer, blue, plain_red = _Timer(), 0, 0
    for i in range(n):
        seed = EVAL_SEED + 600 + i
        picture = one_shape("circle", "red", seed)
        params = _params(seed, images=[picture], **REMIX)
        moved = timer(studio.run, "remix", {**params, "text_from": TEXT_DIFF[0],
                                            "text_to": TEXT_DIFF[1], "text_amount": amount})
        blue += _is(moved.image, "blue", "circle")
        plain_red += _is(studio.run("remix", params).image, "red", "circle")
    return Evaluation("remix_text_diff", n, {"blue circle": blue / n,
                                             "without the diff: red circle": plain_red / n},
                      timer.per_image, {"from": TEXT_DIFF[0], "to": TEXT_DIFF[1],
                                        "amount": amount})


def eval_previews(studio: Any, n: int = 12) -> Evaluation:
    """Live previews mean something: the distilled TAESD decodes a generated image's latents
    to the same objects as the VAE (largest object's colour and shape, mean pixel error), and
    the last preview of each 25-step run already shows the final image's main colour."""
    from dataclasses import replace

    settings = studio.settings  # previews as often as their time budget allows
    studio.settings = replace(settings, preview_interval=0.0)
    try:
        return _eval_previews(studio, n)
    finally:
        studio.settings = settings


def _eval_previews(studio: Any, n: int) -> Evaluation:
    import torch

    registry = studio.registry
    taesd, vae = registry.component("taesd"), registry.component("vae")
    scale = float(vae.config.scaling_factor)
    timer, agree, early, errors, counts = _Timer(), 0, 0, [], []
    for colour, kind, seed in single_shape_prompts(n):
        shown: list[Image.Image] = []

        def keep(im: Image.Image, step: int, total: int, shown: list = shown) -> None:
            shown.append(im)

        image = timer(lambda req, keep=keep: studio.txt2img(req, preview=keep),
                      _params(seed, prompt=f"a {colour} {kind}")).image
        counts.append(len(shown))
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1)
            x = x.permute(2, 0, 1)[None].to(vae.device, vae.dtype)
            z = vae.encode(x).latent_dist.mode() * scale
            y = taesd.decode(z.to(taesd.dtype)).sample[0].float().clamp(-1, 1)
        fast = Image.fromarray(((y + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy())
        errors.append(float(np.abs(np.asarray(fast, dtype=np.float32)
                                   - np.asarray(image, dtype=np.float32)).mean() / 255))
        a, b = _largest(analyse(image)), _largest(analyse(fast))
        agree += bool(a and b and (a.colour, a.shape) == (b.colour, b.shape))
        last = _largest(analyse(shown[-1])) if shown else None
        early += bool(a and last and last.colour == a.colour)
    return Evaluation("previews", n, {
        "TAESD decode agrees": agree / n, "mean pixel error": float(np.mean(errors)),
        "last preview shows the colour": early / n,
        "mean previews per image": float(np.mean(counts))}, timer.per_image)


def eval_sam_click(studio: Any, n: int = 40) -> Evaluation:
    """One click on a shape of a new scene of 1-3 shapes (a random pixel at least 2 px inside
    it), through the Edit tab's SAM path: IoU of the mask with the shape's true mask; also
    the shape's box as the prompt (what a text mask hands SAM)."""
    from studio.backend.tasks.inpaint import binary_array, segment

    timer, ious, box_ious = _Timer(), [], []
    rng = np.random.default_rng(EVAL_SEED + 77)
    for i in range(n):
        scene = random_scene(EVAL_SEED + 5000 + i)
        index = i % len(scene.shapes)
        truth = scene.mask(index)
        inner = _eroded(truth, 2)
        ys, xs = np.nonzero(inner if inner.any() else truth)
        j = int(rng.integers(len(xs)))
        image = scene.render()
        mask, _, _ = timer(segment, studio, image, [[int(xs[j]), int(ys[j]), 1]], None)
        ious.append(iou(binary_array(mask), truth))
        box = [int(v) for v in scene.shapes[index].box]
        box_mask_, _, _ = segment(studio, image, [], box)
        box_ious.append(iou(binary_array(box_mask_), truth))
    return Evaluation("sam_click", n, {
        "click IoU >= 0.7": float(np.mean([v >= 0.7 for v in ious])),
        "box IoU >= 0.7": float(np.mean([v >= 0.7 for v in box_ious])),
        "mean click IoU": float(np.mean(ious)), "mean box IoU": float(np.mean(box_ious))},
        timer.per_image)


def eval_text_mask(studio: Any, n: int = 60, inpaint_n: int = 8) -> Evaluation:
    """"the <colour> <shape>" on new scenes of 2-3 shapes (the named one the only one of its
    colour and kind), through `/text_mask` (detector boxes -> SAM, default threshold): IoU of
    the mask with the named shape >= 0.6. On the first `inpaint_n`, the text mask is inpainted
    with another colour: the other shapes' pixels stay exactly as they were."""
    from studio.backend.requests import RequestError
    from studio.backend.tasks.inpaint import binary_array
    from studio.backend.tasks.text_mask import text_mask

    timer, ious, kept, found = _Timer(), [], 0, 0
    cases = 0
    seed = EVAL_SEED + 6000
    while cases < n:
        seed += 1
        scene = random_scene(seed, max_shapes=3)
        if len(scene.shapes) < 2:
            continue
        index = cases % len(scene.shapes)
        named = scene.shapes[index]
        if sum(s.colour == named.colour and s.kind == named.kind for s in scene.shapes) > 1:
            continue
        image = scene.render()
        try:
            mask, _ = timer(text_mask, studio, image, f"the {named.colour} {named.kind}")
            found += 1
            ious.append(iou(binary_array(mask), scene.mask(index)))
        except RequestError:
            ious.append(0.0)
            mask = None
        if cases < inpaint_n and mask is not None and binary_array(mask).any():
            colour = next(c for c in COMMON_COLOURS if c != named.colour)
            out = np.asarray(studio.inpaint(_params(seed, image=image, mask=mask,
                                                    prompt=f"a {colour} {named.kind}")).image)
            others = np.zeros_like(binary_array(mask))
            for j in range(len(scene.shapes)):
                if j != index:
                    others |= scene.mask(j)
            others &= ~binary_array(mask)
            kept += bool(np.array_equal(out[others], np.asarray(image)[others]))
        cases += 1
    return Evaluation("text_mask", n, {
        "IoU >= 0.6 with the named shape": float(np.mean([v >= 0.6 for v in ious])),
        "found something": found / n, "mean IoU": float(np.mean(ious)),
        "inpaint kept the other shapes": kept / max(1, min(inpaint_n, n))}, timer.per_image)


def _eroded(mask: np.ndarray, px: int) -> np.ndarray:
    """`mask` shrunk by `px` pixels (4-neighbourhood), without scipy."""
    out = mask.copy()
    for _ in range(px):
        p = np.pad(out, 1)
        out = out & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out


HIRES_UPSCALERS = ("latent", "toy-compact-2x")  # the default, and the toy upscaler model
HIRES_DENOISE = 0.5
PLAIN_CHANGE = 2.0  # mean |difference| (0-255) that tells a refined image from an enlarged one


def hires_kept(first: Image.Image, final: Image.Image) -> tuple[bool, float]:
    """(the final image, shrunk to the first's size, keeps its objects: foreground IoU >=
    0.7 and the same colours; the mean |difference| from a Lanczos-enlarged first pass)."""
    small = final.resize(first.size, Image.Resampling.BOX)
    same = {f.colour for f in analyse(first)} == {f.colour for f in analyse(small)}
    kept = iou(foreground(first), foreground(small)) >= 0.7 and same
    plain = first.resize(final.size, Image.Resampling.LANCZOS)
    change = float(np.abs(np.asarray(final, np.float32) - np.asarray(plain, np.float32)).mean())
    return kept, change


def eval_hires(studio: Any, n: int = 12, upscalers: tuple[str, ...] = HIRES_UPSCALERS
               ) -> Evaluation:
    """"a <colour> <shape>" at 64 px, then hires fix to 128 px (denoise 0.5) with each
    upscaler: does the result keep the first pass's objects, and is it more than an
    enlarged copy (mean change from a Lanczos enlargement > PLAIN_CHANGE)?"""
    timer = _Timer()
    kept = dict.fromkeys(upscalers, 0)
    changed = dict.fromkeys(upscalers, 0)
    change_sum = dict.fromkeys(upscalers, 0.0)
    for colour, kind, seed in single_shape_prompts(n):
        params = _params(seed, prompt=f"a {colour} {kind}")
        first = timer(studio.txt2img, params).image
        for name in upscalers:
            final = timer(studio.txt2img, {**params, "hires_scale": 2, "hires_upscaler": name,
                                           "hires_denoise": HIRES_DENOISE}).image
            ok, change = hires_kept(first, final)
            kept[name] += ok
            changed[name] += change > PLAIN_CHANGE
            change_sum[name] += change
    metrics: dict[str, float] = {}
    for name in upscalers:
        metrics[f"kept ({name})"] = kept[name] / n
        metrics[f"changed ({name})"] = changed[name] / n
        metrics[f"mean change ({name})"] = change_sum[name] / n
    return Evaluation("hires", n, metrics, timer.per_image)


CHECKS: dict[str, Callable[..., Evaluation]] = {
    "txt2img": eval_txt2img,
    "control": eval_control,
    "layout": eval_layout,
    "inpaint": eval_inpaint,
    "outpaint": eval_outpaint,
    "sketch": eval_sketch,
    "instruct": eval_instruct,
    "instruct_named": eval_instruct_named,
    "textual_inversion": eval_textual_inversion,
    "held_out_shape": eval_held_out_shape,
    "seedselect": eval_seedselect,
    "word_swap": eval_word_swap,
    "reweight": eval_reweight,
    "attend_excite": eval_attend_excite,
    "previews": eval_previews,
    "remix_variation": eval_remix_variation,
    "remix_interpolation": eval_remix_interpolation,
    "remix_text_diff": eval_remix_text_diff,
    "sam_click": eval_sam_click,
    "text_mask": eval_text_mask,
    "hires": eval_hires,
}


# ---------------------------------------------------------------------------- examples

def example_sheet(studio: Any, path: Path) -> Path:
    """A picture of what each tab does in the toy world: inputs above, outputs below."""
    pairs: list[tuple[Image.Image, Image.Image, str]] = []
    pairs.append((_text_tile("a red circle\nand a blue\nsquare"),
                  studio.txt2img(_params(3, prompt="a red circle and a blue square")).image,
                  "txt2img"))
    scene = random_scene(EVAL_SEED + 1003)
    pairs.append((scene.scribble(), studio.control(_params(
        5, prompt=scene.caption, units=[{"type": "scribble", "image": scene.scribble()}])).image,
        "sketch"))
    box_scene = Scene([Shape("triangle", "yellow", 18, 18, 22), Shape("square", "green", 44, 44,
                                                                      22)])
    pairs.append((_boxes_tile(box_scene), studio.layout(_params(
        7, prompt=box_scene.caption, boxes=box_scene.boxes())).image, "boxes"))
    source = random_scene(EVAL_SEED + 3001)
    mask = box_mask(source.shapes[0].box, grow=3)
    pairs.append((_overlay(source.render(), mask), studio.inpaint(_params(
        9, prompt="a blue triangle", image=source.render(), mask=_mask_image(mask),
        mask_blur=1)).image, "inpaint"))
    one = random_scene(EVAL_SEED + 4002, max_shapes=1)
    colour = next(c for c in ("green", "blue", "red") if c != one.shapes[0].colour)
    pairs.append((one.render(), studio.instruct(_params(
        11, prompt=f"make it {colour}", image=one.render())).image, f"make it {colour}"))
    scale, pad = 3, 6
    tile = SIZE * scale
    sheet = Image.new("RGB", (len(pairs) * (tile + pad) + pad, 2 * tile + 3 * pad + 14), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (top, bottom, label) in enumerate(pairs):
        x = pad + i * (tile + pad)
        sheet.paste(top.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (x, pad))
        sheet.paste(bottom.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST),
                    (x, 2 * pad + tile))
        draw.text((x, 3 * pad + 2 * tile - 2), label, fill=(40, 40, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _text_tile(text: str) -> Image.Image:
    """The prompt, written on a tile (drawn at 2x so it stays legible once scaled up)."""
    img = Image.new("RGB", (SIZE * 2, SIZE * 2), (255, 255, 255))
    ImageDraw.Draw(img).multiline_text((6, 30), text, fill=(0, 0, 0), spacing=6)
    return img


def _boxes_tile(scene: Scene) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        x0, y0, x1, y1 = s.box
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(0, 0, 0))
        draw.text((x0 + 1, y0 + 1), s.colour[0], fill=(0, 0, 0))
    return img


def _overlay(image: Image.Image, mask: np.ndarray) -> Image.Image:
    arr = np.asarray(image.convert("RGB")).copy()
    arr[mask] = (arr[mask] * 0.4 + np.array([255, 0, 255]) * 0.6).astype(np.uint8)
    return Image.fromarray(arr)


# ---------------------------------------------------------------------------- CLI

def toy_studio(root: Path | None = None, work: Path | None = None, name: str = "toy") -> Any:
    """A Studio on the toy models (`name`: "toy", or "toy-xl" for SDXL's architecture; the
    shipped ones, or those in `root`), with its outputs, cache and concept library in `work`
    (default: a new temporary folder)."""
    import tempfile

    from studio.backend.models.builtin import toy_model_set, toy_xl_model_set
    from studio.backend.service import Studio
    from studio.settings import Settings

    work = Path(work or tempfile.mkdtemp(prefix="toy-eval-"))
    settings = Settings(models=name, offline=True, cache_dir=work / "cache",
                        outputs_dir=work / "outputs")
    build = {"toy": toy_model_set, "toy-xl": toy_xl_model_set}[name]
    return Studio(settings, model_set=build(settings.cache_dir, root))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Measure the toy world's models (see module doc).")
    p.add_argument("checks", nargs="*", help=f"some of: {', '.join(CHECKS)} (default: all)")
    p.add_argument("--examples", type=Path, help="write the example sheet to this PNG")
    p.add_argument("--json", type=Path, help="also write the numbers as JSON")
    p.add_argument("--set", choices=("toy", "toy-xl"), default="toy",
                   help="which toy world: SD1.5's architecture or SDXL's")
    p.add_argument("--toy-dir", type=Path, help="toy models to measure (default: the shipped)")
    p.add_argument("--n", type=int, default=0, help="cases per check (default: each check's)")
    args = p.parse_args(argv)
    unknown = set(args.checks) - set(CHECKS)
    if unknown:
        p.error(f"unknown checks {sorted(unknown)}; choose from {', '.join(CHECKS)}")
    import logging

    logging.basicConfig(level=logging.WARNING)
    studio = toy_studio(args.toy_dir, name=args.set)
    if args.examples:
        print("examples:", example_sheet(studio, args.examples))
        if not args.checks:
            return
    results = []
    for name in args.checks or CHECKS:
        t0 = time.perf_counter()
        try:
            ev = CHECKS[name](studio, *([args.n] if args.n else []))
        except RequestError as e:  # a task this family cannot do (toy-xl has no layout)
            print(f"{name}: not measured: {e}", flush=True)
            continue
        results.append(ev)
        print(f"{ev.line()}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    if args.json:
        args.json.write_text(json.dumps([ev.__dict__ for ev in results], indent=2, default=str))


if __name__ == "__main__":
    main()
