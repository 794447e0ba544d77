"""Finding and safely loading annotator weights: local file, local folder or Hub repo.

Safety rule: weights are read with safetensors, or with `torch.load(weights_only=True)`,
which refuses pickled Python objects. Nothing here ever unpickles arbitrary code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingWeightsError, WeightsFormatError

if TYPE_CHECKING:
    import torch

# "owner/name" (a Hub repo) optionally followed by "/path/in/repo.ext" (one file of it).
_REPO_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:/(?P<file>[^\s]+))?$")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def download_hint(repo: str, filename: str | None = None) -> str:
    """The command that fetches `filename` from `repo` into the Hub cache."""
    target = f"{repo} {filename}" if filename else repo
    return f"`hf download {target}` (older huggingface_hub: `huggingface-cli download {target}`)"


def parse_hub_source(source: str) -> tuple[str, str | None] | None:
    """'owner/name' -> (repo, None); 'owner/name/dir/file.pth' -> (repo, 'dir/file.pth')."""
    m = _REPO_RE.match(source)
    if not m or source.startswith((".", "~")) or "\\" in source or ".." in source.split("/"):
        return None
    if m.group("repo").endswith(WEIGHT_SUFFIXES):  # "models/sam.pth": a local path, not a repo
        return None
    return m.group("repo"), m.group("file")


def transformers_config(source: str, kw: dict[str, Any], *, role: str, example: str,
                        needs: str, files: str) -> Any:
    """The transformers config of a model-folder annotator (`source`: a folder or a Hub
    repo id; `kw`: from_pretrained's cache_dir and local_files_only), with clear errors: a
    single file is the wrong format; a missing local folder is named as such; a repo that
    is not there says how to download it. `needs` starts the message ("The depth annotator
    needs the DPT model"), `files` lists what the folder holds."""
    from transformers import AutoConfig

    if os.path.isfile(source):
        raise WeightsFormatError(
            f"The {role} source must be a model folder (config.json + weights) or a Hub repo "
            f"id such as {example}, not a single file: {source}"
        )
    try:
        return AutoConfig.from_pretrained(source, **kw)
    except (OSError, ValueError) as err:
        if parse_hub_source(source) is None or os.path.isabs(source):
            raise MissingWeightsError(
                f"{needs}, and '{source}' is not a model folder ({files}). Point the {role} "
                f"source at one, or at a Hub repo id such as {example}. "
                f"({type(err).__name__})"
            ) from err
        offline = " offline" if kw.get("local_files_only") else ""
        raise MissingWeightsError(
            f"{needs} '{source}' ({files}), which is not available{offline}. Download it "
            f"once with {download_hint(source) if not os.path.isdir(source) else 'the Hub CLI'}"
            f", or set the {role} source to a local folder holding it. ({type(err).__name__})"
        ) from err


def resolve_weight_file(
    source: str | os.PathLike,
    filename: str,
    *,
    annotator: str,
    alternatives: tuple[str, ...] = (),
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Path:
    """Path of one weights file.

    `source` is a local file (used as is), a local folder (must contain `filename` or one of
    `alternatives`), a Hub repo id (its `filename` is downloaded, or taken from the cache), or
    'owner/name/path/in/repo' for another file of a repo. Any failure raises
    MissingWeightsError naming the file, the repo and how to provide it.
    """
    path = Path(os.path.expanduser(os.fspath(source)))
    if path.is_file():
        return path
    if path.is_dir():
        for name in (filename, *alternatives):
            if (path / name).is_file():
                return path / name
        names = " or ".join(repr(n) for n in (filename, *alternatives))
        raise MissingWeightsError(
            f"The {annotator} annotator needs {names} in the folder {path}, but it is not there. "
            "Copy the file into that folder, or set the source to the file itself."
        )
    hub = parse_hub_source(os.fspath(source)) if isinstance(source, str) else None
    if hub is None:
        raise MissingWeightsError(
            f"The {annotator} weights source {os.fspath(source)!r} is neither an existing local "
            "file or folder nor a Hub repo id like 'owner/name'."
        )
    repo, repo_file = hub
    repo_file = repo_file or filename
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    try:
        return Path(hf_hub_download(
            repo, repo_file, cache_dir=os.fspath(cache_dir) if cache_dir else None,
            local_files_only=local_files_only,
        ))
    except (EntryNotFoundError, HFValidationError, OSError, ConnectionError) as err:
        where = "offline and not in the cache" if local_files_only else "not downloadable"
        cache = f" --cache-dir {cache_dir}" if cache_dir else ""
        raise MissingWeightsError(
            f"The {annotator} annotator needs '{repo_file}' from the Hub repo '{repo}', which is "
            f"{where} ({type(err).__name__}). Download it once with "
            f"{download_hint(repo, repo_file)}{' plus' + cache if cache else ''} while online, "
            f"or set the {annotator} source to a local file or folder containing "
            f"'{Path(repo_file).name}'."
        ) from err


def load_state_dict(path: str | os.PathLike, *, annotator: str) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint, loaded safely (safetensors, or torch.load weights_only=True).

    Checkpoints that wrap the weights in {'state_dict': ...} or {'model': ...} are unwrapped.
    """
    import pickle

    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(os.fspath(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise WeightsFormatError(
                f"{path} is not a valid safetensors file for the {annotator} annotator ({err})."
            ) from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as err:
            raise WeightsFormatError(
                f"Refusing to load {path} for the {annotator} annotator: it is not a plain "
                "tensor checkpoint (it holds pickled Python objects or is damaged), and loading "
                "it could run arbitrary code. Use the official weights or convert them to "
                f".safetensors. Details: {str(err).splitlines()[0][:200]}"
            ) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFormatError(
            f"{path} does not contain a state dict of tensors for the {annotator} annotator."
        )
    return state
