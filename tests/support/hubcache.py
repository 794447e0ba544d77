"""A Hugging Face Hub cache built from the tiny models, under the real repo ids.

Real users load `stable-diffusion-v1-5/stable-diffusion-v1-5` and friends from the cache,
often offline; a local folder path skips that code. This writes the cache layout the Hub
client reads (`models--org--name/snapshots/<rev>/...`, `refs/main`) so tests can load the
real ids with HF_HUB_OFFLINE=1 through exactly the code users run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from studio.backend.models.families.sd15 import MODEL_SET as SD15
from studio.backend.models.modelsets import ModelSet

REVISION = "0123456789abcdef0123456789abcdef01234567"


def add_repo(cache: Path, repo_id: str, folder: Path) -> Path:
    """Copy a Hub-layout `folder` into `cache` as the snapshot of `repo_id`."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def hub_cache_of(tiny: ModelSet, cache: Path, repos: tuple[str, ...],
                 real: ModelSet = SD15) -> Path:
    """A Hub cache holding the tiny set's `repos` under the real set's repo ids (SD1.5's by
    default; the tiny SDXL set under SDXL's)."""
    for key in repos:
        add_repo(cache, real.get(key), Path(tiny.get(key)))
    return Path(cache)
