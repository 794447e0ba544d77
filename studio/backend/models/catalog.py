"""The checkpoints a studio can switch between (the model picker, `/models`, A1111's
`sd-models`).

Three kinds, each listed by the name clients use to choose it (never a server path):

- `builtin`: the offline sets under their `--models` names (`toy`; the random `tiny` sets
  when the studio runs on one, for wiring tests);
- `hub`: text-to-image pipelines in the Hugging Face cache (`models--org--name`), under their
  repo ids, plus the family sets `--models sd15` / `sdxl` name (downloaded on first use);
- `file`: single-file checkpoints (`*.safetensors`, the original layout) in `--models-dir`,
  as A1111's `models/Stable-diffusion`, under their path relative to it.

A checkpoint's model set is its family's set with the checkpoint as the base model, so the
family's ControlNets, inpainting and instruct models come with it. Pickled files and unknown
layouts are left out of the list, with a log line saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .families import all_families, detect_family, get_family
from .modelsets import ModelSet

log = logging.getLogger(__name__)

MAX_NAME = 300  # characters a model name may have (a request names one)
PICKLED = (".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Checkpoint:
    """One choice of the picker: its public name, family and kind, and (private) where it is
    and how to build its model set."""

    name: str
    family: str
    source: str  # "builtin", "hub" or "file"
    location: str = ""  # repo id or file path (never shown to clients)
    model_set: ModelSet | None = None  # built-in sets come ready

    def public(self) -> dict[str, str]:
        return {"name": self.name, "family": self.family, "source": self.source}


class UnknownModel(ValueError):
    """A request named a model the catalog does not have (the message lists them)."""


class Catalog:
    """Every checkpoint this studio offers, with the default first; `refresh()` rescans."""

    def __init__(self, default: ModelSet, models_dir: Path | None = None,
                 hub_cache: Path | None = None,
                 builtins: dict[str, tuple[str, Callable[[], ModelSet]]] | None = None,
                 hash_cache: Path | None = None) -> None:
        """`builtins`: name -> (family, a function building its set on first use)."""
        self.default_set = default
        self.models_dir = Path(models_dir) if models_dir else None
        self.hub_cache = hub_cache
        self.builtins = dict(builtins or {})
        self.hash_cache = hash_cache
        self._lock = threading.Lock()
        self._entries: dict[str, Checkpoint] = {}
        self._sets: dict[str, ModelSet] = {}
        self._hashes: dict[str, str | None] = {}
        self.default = self._default_entry(default).name
        self.refresh()

    # ------------------------------------------------------------------ listing
    def _default_entry(self, ms: ModelSet) -> Checkpoint:
        if ms.offline_models or ms.name in self.builtins:
            return Checkpoint(ms.name, ms.family, "builtin", model_set=ms)
        base = ms.base
        if Path(base).exists():
            return Checkpoint(Path(base).name, ms.family, "file", base, model_set=ms)
        return Checkpoint(base, ms.family, "hub", base, model_set=ms)

    def refresh(self) -> list[dict[str, str]]:
        """Rescan the Hub cache and --models-dir (A1111's refresh-checkpoints)."""
        found = [self._default_entry(self.default_set)]
        found += [Checkpoint(name, family, "builtin")
                  for name, (family, _) in self.builtins.items()]
        found += [Checkpoint(fam.model_set.base, fam.name, "hub", fam.model_set.base)
                  for fam in all_families()]
        found += self._scan_hub()
        found += self._scan_dir()
        with self._lock:
            self._entries = {}
            for entry in found:
                self._entries.setdefault(entry.name, entry)
        return self.listing()

    def listing(self) -> list[dict[str, str]]:
        """[{name, family, source}], the default first."""
        with self._lock:
            return [e.public() for e in self._entries.values()]

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def entry(self, name: str) -> Checkpoint:
        """The checkpoint called `name` ("" = the default); anything else is refused, a path
        with its own message (clients choose by name, never by where a file is)."""
        if not name:
            name = self.default
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise UnknownModel("model must be the name of one of the server's models "
                               "(GET /models lists them)")
        with self._lock:
            found = self._entries.get(name)
            known = list(self._entries)
        if found is not None:
            return found
        if name.startswith(("/", "~", ".", "\\")) or "\\" in name or ":" in name:
            raise UnknownModel(f"model {name!r} looks like a path: name one of the server's "
                               f"models instead ({', '.join(known)})")
        raise UnknownModel(f"unknown model {name!r}; this server has: {', '.join(known)}")

    def model_set(self, name: str) -> ModelSet:
        """The model set of checkpoint `name` (built once)."""
        entry = self.entry(name)
        with self._lock:
            ms = self._sets.get(entry.name)
        if ms is not None:
            return ms
        if entry.model_set is not None:
            ms = entry.model_set
        elif entry.source == "builtin":
            ms = self.builtins[entry.name][1]()
        else:
            ms = self._template(entry.family).with_base(entry.location)
        with self._lock:
            self._sets[entry.name] = ms
        return ms

    def _template(self, family: str) -> ModelSet:
        """The set a checkpoint of `family` completes (its ControlNets, inpainting and
        instruct models): the default set when it is of that family (a built-in set's local
        folders also give a single file its configs, offline), else the family's own (whose
        base repo in the Hub cache gives a single file its configs)."""
        ms = self.default_set
        if ms.family != family:
            # an offline studio (built-in sets) completes it with its built-in set of that
            # family; otherwise the family's own (Hub) set
            same = [name for name, (fam, _) in self.builtins.items() if fam == family]
            if not (ms.offline_models and same):
                return get_family(family).model_set
            # the default's kin first: a tiny studio's files are tiny-xl's, a toy one's toy-xl's
            kin = ms.name.split("-")[0]
            same.sort(key=lambda name: name.split("-")[0] != kin)
            ms = self.model_set(same[0])
        if Path(ms.base).is_dir():
            ms = replace(ms, extra={"single_file_config": ms.base, **ms.extra})
        return ms

    # ------------------------------------------------------------------ scans
    def _scan_hub(self) -> list[Checkpoint]:
        """Text-to-image pipelines in the Hub cache (their model_index.json names one)."""
        from huggingface_hub import constants

        root = Path(self.hub_cache or constants.HF_HUB_CACHE)
        if not root.is_dir():
            return []
        txt2img = {fam.pipelines["txt2img"].rpartition(".")[2]: fam.name
                   for fam in all_families()}
        out = []
        for folder in sorted(root.glob("models--*--*")):
            for index in sorted(folder.glob("snapshots/*/model_index.json"))[:1]:
                try:
                    cls = json.loads(index.read_text()).get("_class_name", "")
                except (OSError, ValueError):
                    continue
                if cls in txt2img:
                    repo = folder.name[len("models--"):].replace("--", "/", 1)
                    out.append(Checkpoint(repo, txt2img[cls], "hub", repo))
        return out

    def _scan_dir(self) -> list[Checkpoint]:
        """Single-file checkpoints in --models-dir (and one level of subfolders)."""
        root = self.models_dir
        if root is None or not root.is_dir():
            return []
        out = []
        for path in sorted([*root.glob("*"), *root.glob("*/*")]):
            if not path.is_file():
                continue
            name = path.relative_to(root).as_posix()
            if path.suffix in PICKLED:
                log.warning("models dir: %s is refused unopened: pickled checkpoints can run "
                            "code when loaded; convert it to .safetensors", name)
                continue
            if path.suffix != ".safetensors":
                continue
            try:
                family = detect_family(str(path))
            except (ValueError, OSError) as err:
                log.warning("models dir: %s left out: %s", name, err)
                continue
            out.append(Checkpoint(name, family, "file", str(path.resolve())))
        return out

    # ------------------------------------------------------------------ hashes
    def short_hash(self, name: str) -> str | None:
        """A1111's short model hash (the first 10 hex digits of the file's SHA-256); a Hub
        checkpoint's is its cached revision's; a built-in set's, its base UNet's weights'."""
        entry = self.entry(name)
        with self._lock:
            if entry.name in self._hashes:
                return self._hashes[entry.name]
        value = self._hash(entry)
        with self._lock:
            self._hashes[entry.name] = value
        return value

    def _hash(self, entry: Checkpoint) -> str | None:
        if entry.source == "file":
            return _file_hash(Path(entry.location), self.hash_cache)
        if entry.source == "hub":
            from huggingface_hub import constants

            root = Path(self.hub_cache or constants.HF_HUB_CACHE)
            ref = root / ("models--" + entry.location.replace("/", "--")) / "refs" / "main"
            return ref.read_text().strip()[:10] if ref.is_file() else None
        ms = entry.model_set or self._sets.get(entry.name)
        if ms is None:
            return None
        weights = sorted((Path(ms.base) / "unet").glob("*.safetensors"))
        return _file_hash(weights[0], self.hash_cache) if weights else None


def _file_hash(path: Path, cache: Path | None) -> str | None:
    """SHA-256[:10] of a file, remembered by (path, size, mtime) in `cache` (a JSON file):
    a 6 GB checkpoint takes a while to hash, once."""
    if not path.is_file():
        return None
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    known: dict[str, str] = {}
    if cache is not None and cache.is_file():
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()[:10]
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({**known, key: value}))
        except OSError:
            pass
    return value
