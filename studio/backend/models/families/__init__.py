"""Model families: the one seam through which every task reaches the models.

A family (SD1.5 today; SDXL and FLUX.1 next) is everything that differs between model
generations: which classes load each registry role and from which subfolder, which components
every pipeline shares, which diffusers pipeline each kind of job runs on, the defaults a model
of the family was trained for, how a single-file checkpoint of it is read, its real model set
(the Hub ids), and, per task of the task table, the method it uses or why it has none.

Tasks and runners ask the family (`registry.family.pipeline(registry, "control", ...)`);
only a family's own module names its classes and repo ids (`tests/test_architecture.py`
enforces it). Class names are strings here and are imported on first use, so importing a
family costs nothing. `python -m studio.backend.models` prints the capability matrix.

Adding a family: one module beside `sd15.py` that builds a `Family`, one entry in `FAMILIES`,
its tiny and toy builders, and tests (README "Adding a model family").
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import (
    Component,
    Defaults,
    Family,
    Method,
    Unsupported,
    UnsupportedTask,
)
from .sd15 import FAMILY as SD15
from .sdxl import FAMILY as SDXL

__all__ = ["FAMILIES", "Component", "Defaults", "Family", "Method", "Unsupported",
           "UnsupportedTask", "all_families", "capability_matrix", "detect_family",
           "get_family"]

# every family, by name (the capability matrix's columns, in this order)
FAMILIES: dict[str, Family] = {f.name: f for f in (SD15, SDXL)}


def get_family(name: str) -> Family:
    """The family called `name`; an unknown name lists the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def all_families() -> list[Family]:
    return list(FAMILIES.values())


# Telling state-dict key prefixes of original-layout (single-file) checkpoints, first match
# wins, as diffusers' single-file loader tells them apart: SDXL's second text encoder
# (OpenCLIP bigG) is embedder 1; SD1.x keeps its CLIP ViT-L as `cond_stage_model.transformer`
# (SD2.x has OpenCLIP there, `cond_stage_model.model`, which no family here runs).
_SINGLE_FILE_KEYS = (
    ("sdxl", "conditioner.embedders.1.model.transformer.resblocks."),
    ("sd15", "cond_stage_model.transformer."),
)


def detect_family(source: str) -> str:
    """The family of a local diffusers folder (its `model_index.json` names the pipeline) or
    a single-file `.safetensors` checkpoint (its state-dict keys; only the header is read).
    Unknown layouts get a clear refusal."""
    path = Path(source)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ValueError(f"'{source}' has no model_index.json: it is not a diffusers "
                             "model folder (the Hub layout)")
        cls = str(json.loads(index.read_text()).get("_class_name", ""))
        for fam in all_families():
            if cls in {p.rpartition(".")[2] for p in fam.pipelines.values()}:
                return fam.name
        raise ValueError(f"'{source}' holds a {cls or 'unnamed'} pipeline, which no model "
                         f"family of the studio runs (known: {', '.join(FAMILIES)})")
    if path.suffix != ".safetensors":
        raise ValueError(f"'{source}' is not a .safetensors file. Pickled checkpoints "
                         "(.ckpt/.pt/.bin) can run arbitrary code when loaded, so the studio "
                         "refuses them; convert it to safetensors first.")
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:  # reads the header only
            keys = set(fh.keys())
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"'{source}' is not a readable .safetensors file ({err})") from err
    for name, prefix in _SINGLE_FILE_KEYS:
        if any(k.startswith(prefix) for k in keys):
            return name
    raise ValueError(f"'{source}' is not a checkpoint layout the studio knows (SD1.5 or SDXL "
                     "in the original single-file layout)")


def matrix_tasks() -> list[str]:
    """The matrix's rows: every task some family declares, in the first family's order."""
    rows: list[str] = []
    for fam in all_families():
        rows += [t for t in fam.tasks if t not in rows]
    return rows


def capability_matrix() -> str:
    """The README's capability matrix (task x family) as a Markdown table."""
    families = all_families()
    rows = ["| task | " + " | ".join(f.label for f in families) + " |",
            "|---|" + "---|" * len(families)]
    for task in matrix_tasks():
        cells = []
        for fam in families:
            method = fam.tasks.get(task)
            if isinstance(method, Method):
                cells.append(method.how)
            elif isinstance(method, Unsupported):
                cells.append(f"no: {method.why}")
            else:
                cells.append("not declared")
        rows.append(f"| `/{task}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)
