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
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from studio.backend.images import load_image
from studio.backend.models.modelsets import ModelSet
from studio.backend.models.schedulers import USER_SCHEDULERS
from studio.backend.requests import MAX_CLIP_SKIP, MAX_SEED, RequestError

log = logging.getLogger(__name__)

MAX_IMAGES = 64  # batch_size x n_iter per request (clients offer 8 x 8), within the job budget

# A1111 sampler names (and the k-diffusion aliases clients send) -> the studio's samplers.
SAMPLERS: dict[str, str] = {
    "Euler a": "Euler a", "k_euler_a": "Euler a",
    "Euler": "Euler", "k_euler": "Euler",
    "DPM++ 2M": "DPM++ 2M", "k_dpmpp_2m": "DPM++ 2M",
    "DPM++ 2M Karras": "DPM++ 2M Karras",
    "DPM++ SDE Karras": "DPM++ SDE Karras", "DPM++ SDE": "DPM++ SDE",
    "DDIM": "DDIM", "UniPC": "UniPC", "PLMS": "PNDM", "PNDM": "PNDM",
}
# A1111 >= 1.9's noise schedules ("Schedule type") -> the studio's (models.schedulers)
SCHEDULE_NAMES = {"automatic": "default", "uniform": "default", "normal": "default",
                  "karras": "karras", "exponential": "exponential", "beta": "beta",
                  "sgm_uniform": "trailing", "simple": "trailing", "ddim": "leading",
                  "align_your_steps": "ays"}
# A1111's schedules diffusers' samplers cannot express
NO_SCHEDULE = ("polyexponential", "kl_optimal", "align_your_steps_gits",
               "align_your_steps_11", "align_your_steps_32", "turbo")
LCM = ("LCM", "lcm")

# Numbers A1111's request models coerce (numeric strings, integral floats: the Photoshop
# plugin sends "seed": "-1"), by field: True = a whole number.
NUMBERS = {"seed": True, "subseed": True, "steps": True, "width": True, "height": True,
           "batch_size": True, "n_iter": True, "mask_blur": True, "inpainting_fill": True,
           "inpaint_full_res_padding": True, "inpainting_mask_invert": True,
           "seed_resize_from_h": True, "seed_resize_from_w": True,
           "cfg_scale": False, "denoising_strength": False, "subseed_strength": False,
           "image_cfg_scale": False, "hr_scale": False, "hr_second_pass_steps": True,
           "hr_resize_x": True, "hr_resize_y": True, "upscaling_resize": False,
           "upscaling_resize_w": True, "upscaling_resize_h": True, "resize_mode": True}
UNIT_NUMBERS = {"processor_res": True, "weight": False, "control_mode": True,
                "guidance_start": False, "guidance_end": False, "threshold_a": False,
                "threshold_b": False}

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
    "restore_faces": False, "tiling": False, "styles": [],
    "subseed_strength": 0, "script_name": None, "refiner_checkpoint": None,
}
NOT_SUPPORTED_WHY = {
    "restore_faces": "face restoration is not part of this studio",
    "tiling": "tileable images are not supported",
    "styles": "saved prompt styles are not part of this studio: put them in the prompt",
    "subseed_strength": "variation seeds (subseed) are not supported",
    "script_name": "scripts are not supported",
    "refiner_checkpoint": "refiner models are not part of the SD1.5 family",
}


def decode_image(value: Any, name: str, max_bytes: int, mode: str = "RGB") -> Image.Image:
    """A base64 image (raw, or a `data:image/...;base64,` URL) as a checked image (RGB, or
    `mode`)."""
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
    return load_image(raw, name, mode=mode)


def decode_mask(value: Any, max_bytes: int) -> Image.Image:
    """An img2img mask as A1111 reads it: a mask with transparent pixels is its alpha
    (opaque = change: what canvas clients such as openOutpaint send), else its brightness."""
    rgba = decode_image(value, "mask", max_bytes, mode="RGBA")
    alpha = np.asarray(rgba)[..., 3]
    if (alpha < 255).any():
        return Image.fromarray(np.where(alpha > 128, 255, 0).astype(np.uint8), mode="L")
    return rgba.convert("L")


def decode_init(value: Any, max_bytes: int) -> Image.Image:
    """The img2img init image; its transparent pixels (the empty canvas an outpainting client
    sends) are filled with a smooth continuation of the visible colours, as /outpaint does."""
    from studio.backend.tasks.outpaint import fill_transparent

    rgba = decode_image(value, "init_images[0]", max_bytes, mode="RGBA")
    if (np.asarray(rgba)[..., 3] == 255).all():
        return rgba.convert("RGB")
    return fill_transparent(rgba)


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


def sampler_of(payload: dict[str, Any]) -> tuple[str, bool, str]:
    """(studio sampler, fast mode, schedule) from `sampler_name` (or the old
    `sampler_index`) and the A1111 >= 1.9 `scheduler` field. Whether the sampler can take
    the schedule is the studio's check (it names the samplers that can)."""
    name = payload.get("sampler_name") or payload.get("sampler_index") or "Euler a"
    schedule = str(payload.get("scheduler") or "automatic").strip().lower()
    if schedule in NO_SCHEDULE:
        raise RequestError(f"scheduler {schedule!r} is not available here (diffusers' "
                           f"samplers cannot express it); use one of "
                           f"{', '.join(SCHEDULE_NAMES)}")
    if schedule not in SCHEDULE_NAMES:
        raise RequestError(f"unknown scheduler {schedule!r}; use one of "
                           f"{', '.join(SCHEDULE_NAMES)}")
    if name in LCM:
        return "Euler a", True, SCHEDULE_NAMES[schedule]
    if name not in SAMPLERS:
        known = ", ".join(sorted(k for k in SAMPLERS if not k.startswith("k_"))) + ", LCM"
        raise RequestError(f"unknown sampler_name {name!r}; this server has: {known}")
    return SAMPLERS[name], False, SCHEDULE_NAMES[schedule]


def clip_skip_of(value: Any) -> int:
    """A1111's `CLIP_stop_at_last_layers` (1 = the last layer) as a whole number."""
    value = _number("CLIP_stop_at_last_layers", value, True)
    if isinstance(value, bool) or not isinstance(value, int) or not (
            1 <= value <= MAX_CLIP_SKIP):
        raise RequestError(f"CLIP_stop_at_last_layers must be a whole number from 1 to "
                           f"{MAX_CLIP_SKIP}, got {value!r}")
    return value


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
        models = sorted(n for n, t in names.items() if t in (ctype, UNION))
        modules = ["none", *(m for m, a in MODULES.items() if a == ctype and m != "None")]
        out[label] = {"module_list": modules, "model_list": ["None", *models],
                      "default_option": modules[1] if len(modules) > 1 else "none",
                      "default_model": models[0] if models else "None"}
    return {"control_types": out}


UNION = "union"  # model_names' type for ControlNet Union (every type, by the unit's module)


def model_names(model_set: ModelSet) -> dict[str, str]:
    """ControlNet model names as clients see them (the repo's last part) -> control type
    (`UNION` for the set's ControlNet Union)."""
    def short(source: str) -> str:
        return source.rstrip("/").rsplit("/", 1)[-1]

    names = {short(source): ctype for ctype, source in model_set.controlnets.items()}
    union = model_set.get("controlnet_union")
    if union:
        names[short(union)] = UNION
    return names


@dataclass
class Plan:
    """What one A1111 request becomes: a studio task and one request per image."""

    task: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# Settings (GET/POST /options, `override_settings`) the studio cannot change, with the values
# that are what it does anyway: another value is refused by name.
FIXED_SETTINGS: dict[str, tuple[Any, ...]] = {
    "sd_vae": ("Automatic", "automatic", "None", None, ""),
    "eta_noise_seed_delta": (0, "0", None),
    "samples_format": ("png", "PNG"),
}


def settings_for(payload: dict[str, Any], options: dict[str, Any],
                 checkpoint: Callable[[Any], str]) -> dict[str, Any]:
    """The settings one request runs with: the API's (`options`, from POST /options), then
    the request's `override_settings`. The studio acts on the model (`checkpoint` turns an
    A1111 title or name into the catalog's name, or refuses it) and the clip skip; a setting
    it cannot change is refused by name when it asks for another value; the rest are ignored
    with a log line."""
    out = dict(options)
    over = payload.get("override_settings") or {}
    if not isinstance(over, dict):
        raise RequestError("override_settings must be an object of setting names and values")
    ignored = []
    for key, value in over.items():
        if key == "CLIP_stop_at_last_layers":
            out["clip_skip"] = clip_skip_of(value)
        elif key == "sd_model_checkpoint":
            if value not in (None, ""):
                out["model"] = checkpoint(value)
        elif key in FIXED_SETTINGS:
            if value not in FIXED_SETTINGS[key]:
                raise RequestError(f"override_settings.{key} {value!r}: this server cannot "
                                   f"change it; leave it out or use {FIXED_SETTINGS[key][0]!r}")
        else:
            ignored.append(key)
    if ignored:
        log.info("override_settings: ignored %s (not settings of this studio)",
                 ", ".join(sorted(map(str, ignored))))
    return out


def checkpoint_title(name: str, short_hash: str | None) -> str:
    """A1111's title of a checkpoint: its name and short hash."""
    return f"{name} [{short_hash}]" if short_hash else name


def match_checkpoint(value: Any, names: list[str]) -> str | None:
    """The catalog name an A1111 client means: the name itself, its title ("name [hash]"),
    or A1111's `model_name` (the file name without its extension)."""
    if not isinstance(value, str):
        return None
    base = value.split(" [", 1)[0].strip()
    for name in names:
        if base in (name, name.rsplit(".", 1)[0] if name.endswith(".safetensors") else name):
            return name
    return None


def _common(payload: dict[str, Any], settings: dict[str, Any], width: int | None = None,
            height: int | None = None) -> dict[str, Any]:
    scheduler, fast, schedule = sampler_of(payload)
    return {
        "prompt": payload.get("prompt", ""), "negative_prompt": payload.get("negative_prompt")
        or "", "steps": payload.get("steps", 20), "guidance_scale": payload.get("cfg_scale", 7.0),
        "width": width or payload.get("width", 512), "height": height or payload.get("height", 512),
        "scheduler": scheduler, "fast": fast, "schedule": schedule,
        "clip_skip": settings.get("clip_skip", 1), "model": settings.get("model", ""),
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


# the extension's control modes (names or indices) -> the studio's (tasks.control)
CONTROL_MODES = {"Balanced": "balanced", "My prompt is more important": "prompt",
                 "ControlNet is more important": "control", 0: "balanced", 1: "prompt",
                 2: "control"}


def pixel_perfect_resolution(image: Image.Image, width: int, height: int, resize: str) -> int:
    """The annotator resolution the extension's "pixel perfect" picks: the image's short side
    scaled as the resize mode scales it onto width x height (clamped to the studio's range)."""
    k_h, k_w = height / image.height, width / image.width
    scale = min(k_h, k_w) if resize == "fit" else max(k_h, k_w)
    return int(min(2048, max(64, round(scale * min(image.width, image.height)))))


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
        ctype = _unit_type(i, arg.get("model"), MODULES[module], names, model_set.family)
        union = ctype == UNION
        if union:  # one model for every type: the module says which
            ctype = MODULES[module]
            if ctype is None:
                raise RequestError(
                    f"ControlNet unit {i}: ControlNet Union draws any control type, so name "
                    "the map's type with a module (canny, depth_midas, openpose, scribble...)")
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
        mode = arg.get("control_mode", "Balanced")
        if mode not in CONTROL_MODES:
            raise RequestError(f"ControlNet unit {i}: unknown control_mode {mode!r}; use one "
                               "of Balanced, My prompt is more important, ControlNet is more "
                               "important (or 0, 1, 2)")
        resolution = _resolution(arg.get("processor_res", 512))
        if arg.get("pixel_perfect"):
            resolution = pixel_perfect_resolution(picture, int(payload.get("width", 512)),
                                                  int(payload.get("height", 512)),
                                                  RESIZE[resize])
        units.append({
            "type": ctype, "image": picture, "weight": arg.get("weight", 1.0),
            "start": arg.get("guidance_start", 0.0), "end": arg.get("guidance_end", 1.0),
            "preprocess": MODULES[module] is not None,
            "annotator": MODULES[module], "resize_mode": RESIZE[resize],
            "resolution": resolution, "control_mode": CONTROL_MODES[mode],
            "model": UNION if union else "",
        })
    return units


# words in ControlNet file names that say which model family they are for
FAMILY_WORDS = {"sd15": "sd15", "v15": "sd15", "sdxl": "sdxl", "xl": "sdxl"}


def _by_type_and_family(i: int, model: Any, base: str, names: dict[str, str], family: str
                        ) -> set[str]:
    """The control types a name from another install names ("control_v11p_sd15_canny"
    holds "canny"), refused by name when it is for another model family."""
    words = set(re.split(r"[^a-z0-9]+", base))
    families = {FAMILY_WORDS[w] for w in words if w in FAMILY_WORDS}
    if families and family not in families:
        raise RequestError(f"ControlNet unit {i}: model {model!r} is for {', '.join(families)}"
                           f" models and this server runs {family} models; use one of: "
                           f"{', '.join(sorted(names))}")
    return {ctype for ctype in set(names.values()) if ctype in words}


def _unit_type(i: int, model: Any, annotator: str | None, names: dict[str, str],
               family: str) -> str:
    """The unit's control type: from its model name, matched as the ControlNet extension
    does (without a ` [hash]`, case-insensitive, else a unique part of one name: "canny"),
    then by the control type its words name (a name from an A1111 install), else its
    module's."""
    if model not in (None, "", "None", "none"):
        base = str(model).split(" [", 1)[0].strip().lower()
        lowered = {n.lower(): ctype for n, ctype in names.items()}
        if base in lowered:
            return lowered[base]
        found = {ctype for n, ctype in lowered.items() if base and base in n}
        if len(found) == 1:
            return found.pop()
        if not found:  # a name from an A1111 install: "control_v11p_sd15_canny [d14c016b]"
            found = _by_type_and_family(i, model, base, names, family)
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


# A1111's upscaler names (hires fix's `hr_upscaler`, Extras' `upscaler_1`) -> the studio's;
# a model's name is its file's stem in both
UPSCALER_NAMES = {"latent": "latent", "latent (bilinear)": "latent", "lanczos": "lanczos",
                  "nearest": "none", "none": "none"}
# what A1111 lists (GET /sdapi/v1/upscalers) for the studio's built-in pixel upscalers
A1111_PIXEL_UPSCALERS = {"None": "none", "Lanczos": "lanczos", "Nearest": "none"}
HIRES_DENOISE = 0.7  # A1111's hires fix default denoising strength
# hires fix fields the studio has no counterpart for: accepted when they say "the first
# pass's" (empty, A1111's "Use same ...", or the first pass's own value)
HR_SAME = {"hr_checkpoint_name": ("Use same checkpoint", None),
           "hr_sampler_name": ("Use same sampler", "sampler_name"),
           "hr_scheduler": ("Use same scheduler", "scheduler")}


def upscaler_name(value: Any, field_name: str) -> Any:
    """An A1111 upscaler name as the studio's (a model's name is left for the studio's
    library to check); other latent modes are refused by name."""
    if not isinstance(value, str):
        return value
    key = value.strip().lower()
    if key in UPSCALER_NAMES:
        return UPSCALER_NAMES[key]
    if key.startswith("latent"):
        raise RequestError(f"{field_name} {value!r}: the studio's latent upscaler is bilinear "
                           "(A1111's \"Latent\"); use Latent, Lanczos, Nearest or a model")
    return value.strip()


def hires_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """A1111's hires fix fields as the studio's `hires_*` parameters ({} without
    `enable_hr`): `hr_resize_x`/`_y` become the scale (the first pass's aspect is kept)."""
    if not payload.get("enable_hr"):
        return {}
    for key, (same, first) in HR_SAME.items():
        value = payload.get(key)
        if value not in (None, "", same) and not (first and value == payload.get(first)):
            raise RequestError(f"{key}: the second pass uses the first pass's; leave it "
                               "empty")
    negative = payload.get("hr_negative_prompt")
    if negative and negative != (payload.get("negative_prompt") or ""):
        raise RequestError("hr_negative_prompt: the second pass uses the negative prompt; "
                           "leave it empty")
    width, height = payload.get("width", 512), payload.get("height", 512)
    scale = payload.get("hr_scale", 2.0)
    rx, ry = payload.get("hr_resize_x") or 0, payload.get("hr_resize_y") or 0
    if rx or ry:
        scale = _resize_scale(rx, ry, width, height)
    return {"hires_scale": scale,
            "hires_upscaler": upscaler_name(payload.get("hr_upscaler") or "Latent",
                                            "hr_upscaler"),
            "hires_denoise": HIRES_DENOISE if payload.get("denoising_strength") is None
            else payload["denoising_strength"],
            "hires_steps": payload.get("hr_second_pass_steps") or 0,
            "hires_prompt": payload.get("hr_prompt") or ""}


def _resize_scale(rx: Any, ry: Any, width: Any, height: Any) -> float:
    """hr_resize_x/y (either may be 0: it follows the aspect) as one scale."""
    for name, value in (("hr_resize_x", rx), ("hr_resize_y", ry), ("width", width),
                        ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise RequestError(f"{name} must be a whole number, got {value!r}")
    if not width or not height:
        raise RequestError("width and height must be positive")
    sx, sy = rx / width, ry / height
    if rx and ry and abs(sx - sy) * min(width, height) > 8:
        raise RequestError(
            f"hr_resize_x/y {rx}x{ry} changes the aspect of {width}x{height}; the studio "
            "keeps the first pass's aspect: give one of them (the other 0) or hr_scale")
    return float(max(sx, sy))


def txt2img_plan(payload: dict[str, Any], model_set: ModelSet, max_bytes: int,
                 settings: dict[str, Any] | None = None) -> Plan:
    """`settings`: from `settings_for` (the API's options and the request's overrides)."""
    payload = coerced(payload)
    check_supported(payload)
    common = {**_common(payload, settings or {}), **hires_fields(payload)}
    units = controlnet_units(payload, model_set, max_bytes)
    plan = Plan("control" if units else "txt2img")
    for seed in _seeds(payload):
        plan.requests.append({**common, "seed": seed, **({"units": units} if units else {})})
    return plan


def img2img_plan(payload: dict[str, Any], model_set: ModelSet, max_bytes: int,
                 settings: dict[str, Any] | None = None) -> Plan:
    payload = coerced(payload)
    check_supported(payload)
    images = payload.get("init_images") or []
    if len(images) != 1:
        raise RequestError(f"init_images must hold one image, got {len(images)}")
    width, height = payload.get("width", 512), payload.get("height", 512)
    init = decode_init(images[0], max_bytes)
    if init.size != (width, height):  # A1111 resizes the init image to width x height first
        init = init.resize((int(width), int(height)), Image.Resampling.LANCZOS)
    strength = payload.get("denoising_strength", 0.75)
    units = controlnet_units(payload, model_set, max_bytes, init=init)
    mask = payload.get("mask")
    common = _common(payload, settings or {}, width, height)
    if mask:
        if units:
            raise RequestError("ControlNet units with an inpainting mask are not supported "
                               "yet: send the mask or the units, not both")
        m = decode_mask(mask, max_bytes)
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


def extras_request(payload: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """POST /sdapi/v1/extra-single-image as the studio's `upscale` request. Face
    restoration and a second upscaler are refused when set; `resize_mode` 1 (to a size)
    must keep the image's aspect."""
    payload = coerced(payload)
    for key in ("gfpgan_visibility", "codeformer_visibility"):
        if payload.get(key):
            raise RequestError(f"{key}: face restoration is not part of this studio")
    if payload.get("extras_upscaler_2_visibility") and str(
            payload.get("upscaler_2") or "None") != "None":
        raise RequestError("upscaler_2: one upscaler at a time here; set "
                           "extras_upscaler_2_visibility 0")
    image = decode_image(payload.get("image"), "image", max_bytes)
    scale = payload.get("upscaling_resize", 2)
    if payload.get("resize_mode", 0) == 1:
        w, h = payload.get("upscaling_resize_w", 512), payload.get("upscaling_resize_h", 512)
        scale = _resize_scale(w, h, image.width, image.height)
    return {"image": image, "scale": scale,
            "upscaler": upscaler_name(payload.get("upscaler_1") or "None", "upscaler_1")}


def infotext(request: dict[str, Any], result_info: dict[str, Any], model: str) -> str:
    """A1111's infotext for one image (what its PNGs carry in `parameters`)."""
    from studio.backend.outputs import a1111_parameters

    return a1111_parameters({**result_info.get("request", request)},
                            result_info.get("model") or model, result_info.get("model_hash"))


def sampler_list() -> list[dict[str, Any]]:
    aliases: dict[str, list[str]] = {}
    for a1111, ours in SAMPLERS.items():
        if a1111 != ours:
            aliases.setdefault(ours, []).append(a1111)
    return [{"name": name, "aliases": aliases.get(name, []), "options": {}}
            for name in USER_SCHEDULERS] + [{"name": "LCM", "aliases": [], "options": {}}]
