"""AUTOMATIC1111 request shapes -> the studio's requests, and back (pure functions).

A1111's `/sdapi/v1/txt2img` and `/img2img` take one JSON payload with images as base64 PNGs
and the ControlNet extension's units under `alwayson_scripts`. Each maps onto the studio's own
tasks, so the same validation, budgets and models apply:

- txt2img -> `txt2img`, or `control` when a ControlNet unit is enabled;
- img2img with a mask -> `inpaint` (outside the blurred mask the pixels stay exact);
- img2img without a mask -> `control` with an init image when a unit is enabled, else
  `inpaint` in blend mode over the whole image (plain img2img on the base UNet).

Fields that would change the image in ways the studio cannot honour (hires fix, face
restoration, tiling, styles, variation seeds, scripts) are refused by name when set, never
silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import io
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from studio.backend.images import load_image
from studio.backend.models.modelsets import ModelSet
from studio.backend.models.schedulers import USER_SCHEDULERS
from studio.backend.requests import MAX_SEED, RequestError

MAX_IMAGES = 64  # batch_size x n_iter per request (clients offer 8 x 8), within the job budget

# A1111 sampler names (and the k-diffusion aliases clients send) -> the studio's samplers.
SAMPLERS: dict[str, str] = {
    "Euler a": "Euler a", "k_euler_a": "Euler a",
    "Euler": "Euler", "k_euler": "Euler",
    "DPM++ 2M": "DPM++ 2M", "k_dpmpp_2m": "DPM++ 2M",
    "DPM++ 2M Karras": "DPM++ 2M Karras",
    "DPM++ SDE Karras": "DPM++ SDE Karras",
    "DPM++ SDE": "DPM++ SDE Karras",  # A1111 >= 1.9: with scheduler "Karras"
    "DDIM": "DDIM", "UniPC": "UniPC", "PLMS": "PNDM", "PNDM": "PNDM",
}
# A1111 >= 1.9 names the noise schedule separately: (sampler, schedule) -> sampler.
KARRAS = {"DPM++ 2M": "DPM++ 2M Karras", "DPM++ SDE": "DPM++ SDE Karras",
          "DPM++ SDE Karras": "DPM++ SDE Karras", "DPM++ 2M Karras": "DPM++ 2M Karras"}
# A1111's schedules that leave the sampler's own noise schedule (as the studio samples)
DEFAULT_SCHEDULES = ("automatic", "uniform", "normal")
LCM = ("LCM", "lcm")

# Numbers A1111's request models coerce (numeric strings, integral floats: the Photoshop
# plugin sends "seed": "-1"), by field: True = a whole number.
NUMBERS = {"seed": True, "subseed": True, "steps": True, "width": True, "height": True,
           "batch_size": True, "n_iter": True, "mask_blur": True, "inpainting_fill": True,
           "inpaint_full_res_padding": True, "inpainting_mask_invert": True,
           "seed_resize_from_h": True, "seed_resize_from_w": True,
           "cfg_scale": False, "denoising_strength": False, "subseed_strength": False,
           "image_cfg_scale": False}
UNIT_NUMBERS = {"processor_res": True, "weight": False, "guidance_start": False,
                "guidance_end": False, "threshold_a": False, "threshold_b": False}

# ControlNet extension modules -> the studio's annotator (None: the image is the map).
MODULES: dict[str, str | None] = {
    "none": None, "None": None,
    "canny": "canny",
    "depth": "depth", "depth_midas": "depth",
    "openpose": "openpose",
    "scribble": "scribble", "invert": "scribble", "invert (from white bg & black line)":
    "scribble",
}
# A1111 resize modes (names or their indices) -> the studio's.
RESIZE = {"Just Resize": "stretch", "Crop and Resize": "crop", "Resize and Fill": "fit",
          0: "stretch", 1: "crop", 2: "fit"}

# Fields that change the output and that the studio cannot honour: refused when set.
UNSUPPORTED_IF_SET: dict[str, Any] = {
    "enable_hr": False, "restore_faces": False, "tiling": False, "styles": [],
    "subseed_strength": 0, "script_name": None, "refiner_checkpoint": None,
}
NOT_SUPPORTED_WHY = {
    "enable_hr": "hires fix is not supported yet: generate at the final size instead",
    "restore_faces": "face restoration is not part of this studio",
    "tiling": "tileable images are not supported",
    "styles": "saved prompt styles are not part of this studio: put them in the prompt",
    "subseed_strength": "variation seeds (subseed) are not supported",
    "script_name": "scripts are not supported",
    "refiner_checkpoint": "refiner models are not part of the SD1.5 family",
}


def decode_image(value: Any, name: str, max_bytes: int) -> Image.Image:
    """A base64 image (raw, or a `data:image/...;base64,` URL) as a checked RGB image."""
    if not isinstance(value, str) or not value:
        raise RequestError(f"{name} must be a base64-encoded image")
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    if len(value) * 3 // 4 > max_bytes:
        raise RequestError(f"{name} is over {max_bytes // 2**20} MB; send a smaller image")
    try:
        raw = base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"{name} is not valid base64 ({err})") from err
    return load_image(raw, name)


def encode_png(image: Image.Image, parameters: str = "") -> str:
    """A PNG (with the A1111 `parameters` text) as base64."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def _number(name: str, value: Any, whole: bool) -> Any:
    """`value` as A1111's pydantic models read it: "7" -> 7, "7.5" -> 7.5, 5.0 -> 5 for a whole
    number; anything else is left for the studio's validation to name."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return value
    if isinstance(value, float) and whole:
        if not value.is_integer():
            raise RequestError(f"{name} must be a whole number, got {value:g}")
        return int(value)
    if isinstance(value, int) and not whole:
        return float(value)
    return value


def _numbers(values: dict[str, Any], table: dict[str, bool]) -> dict[str, Any]:
    return {k: _number(k, v, table[k]) if k in table else v for k, v in values.items()}


def coerced(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of an A1111 payload with its numbers (and its ControlNet units') coerced."""
    out = _numbers(payload, NUMBERS)
    scripts = out.get("alwayson_scripts")
    if isinstance(scripts, dict):
        out["alwayson_scripts"] = {name: _coerced_units(block) for name, block in
                                   scripts.items()}
    return out


def _coerced_units(block: Any) -> Any:
    if not isinstance(block, dict) or not isinstance(block.get("args"), list):
        return block
    args = [_numbers(arg, UNIT_NUMBERS) if isinstance(arg, dict) else arg
            for arg in block["args"]]
    return {**block, "args": args}


def check_supported(payload: dict[str, Any]) -> None:
    for key, default in UNSUPPORTED_IF_SET.items():
        value = payload.get(key, default)
        if value not in (default, None, "", [], 0, False, "None"):
            raise RequestError(f"{key}: {NOT_SUPPORTED_WHY[key]}")


def sampler_of(payload: dict[str, Any]) -> tuple[str, bool]:
    """(studio sampler, fast mode) from `sampler_name` (or the old `sampler_index`) and the
    A1111 >= 1.9 `scheduler` field."""
    name = payload.get("sampler_name") or payload.get("sampler_index") or "Euler a"
    schedule = str(payload.get("scheduler") or "automatic")
    if name in LCM:
        return "Euler a", True
    if name not in SAMPLERS:
        known = ", ".join(sorted(k for k in SAMPLERS if not k.startswith("k_"))) + ", LCM"
        raise RequestError(f"unknown sampler_name {name!r}; this server has: {known}")
    if schedule.lower() == "karras":
        if name in KARRAS:
            return KARRAS[name], False
        raise RequestError(
            f"scheduler {schedule!r} with sampler {name!r}: this server has Karras sigmas for "
            f"{', '.join(sorted(k for k in KARRAS if 'Karras' not in k))} only; use one of "
            "those, or scheduler automatic")
    if schedule.lower() not in DEFAULT_SCHEDULES:
        raise RequestError(
            f"scheduler {schedule!r} is not available here; use "
            f"{', '.join(DEFAULT_SCHEDULES)} (the sampler's own schedule) or karras")
    return SAMPLERS[name], False


# the ControlNet extension's control types, by the studio's control type
CONTROL_TYPES = {"canny": "Canny", "depth": "Depth", "openpose": "OpenPose",
                 "scribble": "Scribble"}


def module_list(alias_names: bool = False) -> dict[str, Any]:
    """The ControlNet extension's /controlnet/module_list, with the `module_detail` clients
    read before a request (no module here needs a model of its own)."""
    resolution = {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048}
    detail = {name: {"model_free": False, "sliders": [resolution] if annotator else []}
              for name, annotator in MODULES.items()}
    return {"module_list": list(MODULES), "module_detail": detail}


def control_types(model_set: ModelSet) -> dict[str, Any]:
    """The ControlNet extension's /controlnet/control_types for this studio's models."""
    names = model_names(model_set)
    out: dict[str, Any] = {}
    for ctype, label in CONTROL_TYPES.items():
        models = sorted(n for n, t in names.items() if t == ctype)
        modules = ["none", *(m for m, a in MODULES.items() if a == ctype and m != "None")]
        out[label] = {"module_list": modules, "model_list": ["None", *models],
                      "default_option": modules[1] if len(modules) > 1 else "none",
                      "default_model": models[0] if models else "None"}
    return {"control_types": out}


def model_names(model_set: ModelSet) -> dict[str, str]:
    """ControlNet model names as clients see them (the repo's last part) -> control type."""
    return {source.rstrip("/").rsplit("/", 1)[-1]: ctype
            for ctype, source in model_set.controlnets.items()}


@dataclass
class Plan:
    """What one A1111 request becomes: a studio task and one request per image."""

    task: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _common(payload: dict[str, Any], width: int | None = None, height: int | None = None
            ) -> dict[str, Any]:
    scheduler, fast = sampler_of(payload)
    return {
        "prompt": payload.get("prompt", ""), "negative_prompt": payload.get("negative_prompt")
        or "", "steps": payload.get("steps", 20), "guidance_scale": payload.get("cfg_scale", 7.0),
        "width": width or payload.get("width", 512), "height": height or payload.get("height", 512),
        "scheduler": scheduler, "fast": fast,
    }


def _seeds(payload: dict[str, Any]) -> list[int]:
    """One seed per image: A1111 counts up from the (resolved) seed."""
    count = _count(payload)
    seed = payload.get("seed", -1)
    if seed in (-1, None):
        seed = random.randint(0, MAX_SEED - count)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be a whole number from -1 to {MAX_SEED}, got {seed!r}")
    return [min(seed + i, MAX_SEED) for i in range(count)]


def _count(payload: dict[str, Any]) -> int:
    size, rounds = payload.get("batch_size", 1), payload.get("n_iter", 1)
    for name, value in (("batch_size", size), ("n_iter", rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"{name} must be a whole number >= 1, got {value!r}")
    if size * rounds > MAX_IMAGES:
        raise RequestError(f"batch_size x n_iter is {size * rounds}; the limit is {MAX_IMAGES}")
    return size * rounds


def controlnet_units(payload: dict[str, Any], model_set: ModelSet, max_bytes: int,
                     init: Image.Image | None = None) -> list[dict[str, Any]]:
    """The enabled ControlNet units of `alwayson_scripts` as the studio's control units."""
    scripts = payload.get("alwayson_scripts") or {}
    block = next((v for k, v in scripts.items() if str(k).lower() == "controlnet"), None)
    args = (block or {}).get("args") or []
    names = model_names(model_set)
    units = []
    for i, arg in enumerate(args, 1):
        if not isinstance(arg, dict) or not arg.get("enabled", True):
            continue
        module = arg.get("module", "none")
        if module not in MODULES:
            raise RequestError(
                f"ControlNet unit {i}: module {module!r} is not available here; use one of "
                f"{', '.join(sorted(m for m in MODULES if ' ' not in m))}")
        ctype = _unit_type(i, arg.get("model"), MODULES[module], names)
        image = arg.get("image") or arg.get("input_image")
        if isinstance(image, dict):  # ControlNet >= 1.1.4: {"image": b64, "mask": b64}
            image = image.get("image")
        if image:
            picture = decode_image(image, f"ControlNet unit {i} image", max_bytes)
        elif init is not None:
            picture = init  # img2img: the unit conditions on the init image
        else:
            raise RequestError(f"ControlNet unit {i} has no image")
        resize = arg.get("resize_mode", "Crop and Resize")
        if resize not in RESIZE:
            raise RequestError(f"ControlNet unit {i}: unknown resize_mode {resize!r}")
        units.append({
            "type": ctype, "image": picture, "weight": arg.get("weight", 1.0),
            "start": arg.get("guidance_start", 0.0), "end": arg.get("guidance_end", 1.0),
            "preprocess": MODULES[module] is not None,
            "annotator": MODULES[module], "resize_mode": RESIZE[resize],
            "resolution": _resolution(arg.get("processor_res", 512)),
        })
    return units


def _unit_type(i: int, model: Any, annotator: str | None, names: dict[str, str]) -> str:
    """The unit's control type: from its model name, matched as the ControlNet extension
    does (without a ` [hash]`, case-insensitive, else a unique part of one name: "canny"),
    else its module's."""
    if model not in (None, "", "None", "none"):
        base = str(model).split(" [", 1)[0].strip().lower()
        lowered = {n.lower(): ctype for n, ctype in names.items()}
        if base in lowered:
            return lowered[base]
        found = {ctype for n, ctype in lowered.items() if base and base in n}
        if len(found) == 1:
            return found.pop()
        why = "matches several" if found else "is unknown"
        raise RequestError(f"ControlNet unit {i}: model {model!r} {why}; this server has: "
                           f"{', '.join(sorted(names))}")
    if annotator in set(names.values()):
        return annotator
    raise RequestError(f"ControlNet unit {i}: name a model (GET /controlnet/model_list)")


def _resolution(value: Any) -> Any:
    """processor_res -1 (A1111's "pixel perfect" default) -> the studio's 512."""
    return 512 if value in (-1, None) else value


def txt2img_plan(payload: dict[str, Any], model_set: ModelSet, max_bytes: int) -> Plan:
    payload = coerced(payload)
    check_supported(payload)
    common = _common(payload)
    units = controlnet_units(payload, model_set, max_bytes)
    plan = Plan("control" if units else "txt2img")
    for seed in _seeds(payload):
        plan.requests.append({**common, "seed": seed, **({"units": units} if units else {})})
    return plan


def img2img_plan(payload: dict[str, Any], model_set: ModelSet, max_bytes: int) -> Plan:
    payload = coerced(payload)
    check_supported(payload)
    images = payload.get("init_images") or []
    if len(images) != 1:
        raise RequestError(f"init_images must hold one image, got {len(images)}")
    width, height = payload.get("width", 512), payload.get("height", 512)
    init = decode_image(images[0], "init_images[0]", max_bytes)
    if init.size != (width, height):  # A1111 resizes the init image to width x height first
        init = init.resize((int(width), int(height)), Image.Resampling.LANCZOS)
    strength = payload.get("denoising_strength", 0.75)
    units = controlnet_units(payload, model_set, max_bytes, init=init)
    mask = payload.get("mask")
    common = _common(payload, width, height)
    if mask:
        if units:
            raise RequestError("ControlNet units with an inpainting mask are not supported "
                               "yet: send the mask or the units, not both")
        m = decode_image(mask, "mask", max_bytes).convert("L")
        if m.size != (width, height):
            m = m.resize((int(width), int(height)), Image.Resampling.NEAREST)
        if payload.get("inpainting_mask_invert", 0):
            m = Image.eval(m, lambda v: 255 - v)
        base = {**common, "image": init, "mask": m, "strength": strength,
                "mask_blur": payload.get("mask_blur", 4),
                "only_masked": bool(payload.get("inpaint_full_res", False)),
                "padding": payload.get("inpaint_full_res_padding", 32), "mode": "inpaint"}
        if not base["only_masked"]:
            base.pop("width"), base.pop("height")  # whole image: its own size
        plan = Plan("inpaint")
    elif units:
        base = {**common, "units": units, "init_image": init, "strength": strength}
        plan = Plan("control")
    else:  # plain img2img: the base UNet over a mask covering everything
        base = {**common, "image": init, "mask": Image.new("L", init.size, 255),
                "strength": strength, "mask_blur": 0, "mode": "blend"}
        base.pop("width"), base.pop("height")
        plan = Plan("inpaint")
    plan.requests = [{**base, "seed": seed} for seed in _seeds(payload)]
    return plan


def infotext(request: dict[str, Any], result_info: dict[str, Any], model: str) -> str:
    """A1111's infotext for one image (what its PNGs carry in `parameters`)."""
    from studio.backend.outputs import a1111_parameters

    return a1111_parameters({**result_info.get("request", request)}, model)


def sampler_list() -> list[dict[str, Any]]:
    aliases: dict[str, list[str]] = {}
    for a1111, ours in SAMPLERS.items():
        if a1111 != ours:
            aliases.setdefault(ours, []).append(a1111)
    return [{"name": name, "aliases": aliases.get(name, []), "options": {}}
            for name in USER_SCHEDULERS] + [{"name": "LCM", "aliases": [], "options": {}}]
