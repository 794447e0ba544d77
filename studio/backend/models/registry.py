"""ModelRegistry: the single owner of every model in the studio.

Components are keyed by what they are and where they come from (`unet@<source>`,
`controlnet:depth@<source>`, ...), built once on first use, and shared: every pipeline is
assembled from registry components, so the tokenizer, text encoder and VAE exist once for all
tabs and each distinct UNet/ControlNet exists once.

A memory budget bounds the bytes resident on the compute device. Past it, least-recently-used
components not needed by the current call are offloaded to CPU (on an accelerator) or dropped
(on CPU, where "offloading" would free nothing); a dropped component is reloaded on next use.
Every load, offload, onload and drop is logged and counted in `stats`.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..deadline import watch_blocks
from .families import get_family
from .modelsets import ModelSet
from .speed import COMPILED_ROLES, SpeedOptions, prepare_component

log = logging.getLogger(__name__)

# Roles whose objects carry no weights (never counted against the budget, never evicted).
_WEIGHTLESS = {"tokenizer", "scheduler"}


class ModelUnavailableError(RuntimeError):
    """Weights are neither cached nor downloadable; the message says how to fix it."""


class DeviceMemoryError(RuntimeError):
    """A model does not fit on the device even with every other one evicted."""


# The file diffusers' save_lora_weights writes; named explicitly, or loading a LoRA repo
# offline fails ("When using the offline mode, you must specify a `weight_name`").
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


@dataclass
class _Entry:
    key: str
    role: str
    obj: Any
    nbytes: int
    on_device: bool


def module_bytes(obj: Any) -> int:
    """Bytes of parameters and buffers of a torch module (0 for anything else)."""
    if not isinstance(obj, torch.nn.Module):
        return 0
    total = 0
    for t in list(obj.parameters()) + list(obj.buffers()):
        total += t.numel() * t.element_size()
    return total


def _watched(role: str) -> bool:
    """Roles whose blocks check the job's deadline: denoisers, ControlNets, the VAE."""
    return role.startswith(("unet", "controlnet")) or role == "vae"


def is_single_file(source: str) -> bool:
    return source.endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin"))


def _hub_refusal(err: BaseException) -> str | None:
    """"gated" or "unauthorized" when the Hub refused the download (anywhere in the error's
    chain: diffusers and transformers wrap huggingface_hub's errors), else None."""
    seen: BaseException | None = err
    while seen is not None:
        name, text = type(seen).__name__, str(seen).lower()
        if name == "GatedRepoError" or "gated repo" in text or "is restricted" in text:
            return "gated"
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if status in (401, 403):
            return "unauthorized"
        seen = seen.__cause__ or seen.__context__
    return None


def missing_weights_message(source: str, role: str, err: BaseException) -> str:
    """A message that names the model and says how to provide it."""
    refused = _hub_refusal(err)
    if refused is not None:
        why = ("is a gated repository: its authors ask you to accept their licence first"
               if refused == "gated" else "refused this download (it needs a login)")
        return (
            f"Could not download the {role}: '{source}' on the Hugging Face Hub {why}. Open "
            f"https://huggingface.co/{source} with your account (accept the licence there if "
            "asked), create a read token at https://huggingface.co/settings/tokens, and log "
            "in on this machine: `huggingface-cli login`, or start the studio with "
            "HF_TOKEN=<your token> in its environment."
        )
    if Path(source).is_absolute() or source.startswith((".", "~")) or Path(source).exists():
        return (
            f"Could not load the {role} from local path '{source}': {err}. "
            "Check that the folder is in the diffusers (Hub) layout or that the file exists."
        )
    return (
        f"Could not load the {role} from '{source}': the weights are not in the local Hugging "
        f"Face cache and the Hub could not be reached ({type(err).__name__}). To fix it, "
        f"download them on a machine with internet access: `huggingface-cli download {source}` "
        "(then copy the cache folder over), or pass a local folder with --base-model / "
        "--models PATH, or start with --models tiny for the built-in offline models."
    )


class ModelRegistry:
    """Lazily loads, shares, budgets and counts every model component."""

    def __init__(
        self,
        model_set: ModelSet,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        budget_bytes: int | None = None,
        offline: bool = False,
        cache_dir: Path | None = None,
        evict_policy: str = "auto",
        max_loras: int = 8,
        speed: SpeedOptions | None = None,
        configs_dir: Path | None = None,
    ) -> None:
        self.model_set = model_set
        self.family = get_family(model_set.family)
        self.device = torch.device(device)
        self.dtype = dtype
        self.budget_bytes = budget_bytes
        # "offload" (move to CPU, keep) or "drop" (free, reload on next use); "auto" offloads
        # from accelerators and drops on CPU, where moving frees nothing.
        if evict_policy == "auto":
            evict_policy = "drop" if self.device.type == "cpu" else "offload"
        if evict_policy not in ("offload", "drop"):
            raise ValueError(f"evict_policy must be auto, offload or drop, got {evict_policy!r}")
        self.evict_policy = evict_policy
        self.offline = offline
        self.hub_cache_dir = None if cache_dir is None else str(cache_dir)
        # where the families' shipped configs are written for single files (None: the Hub's)
        self.configs_dir = configs_dir
        self.stats: Counter[str] = Counter()
        self.events: list[str] = []
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # LRU order: oldest first
        self._pipelines: dict[str, Any] = {}
        self._pipeline_keys: dict[str, tuple[str, ...]] = {}
        # single-file checkpoint -> its components not yet taken (see _from_single_file)
        self._single_file_parts: dict[str, dict[str, Any]] = {}
        # (sampler, schedule, config key) -> prototype
        self._schedulers: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.RLock()
        self._loaded_loras: dict[str, set[str]] = {}  # unet key -> adapter names
        # LoRA adapters kept per UNet: past it, the least recently used idle one is unloaded
        self.max_loras = max_loras
        self._lora_used: dict[tuple[str, str], int] = {}  # (unet key, adapter) -> call number
        self._call = 0  # counts configured pipeline calls (see begin_call)
        # callables (pipe, request, unet_role) -> {adapter: weight}, run before every call
        self.hooks: list[Callable[[Any, Any, str], dict[str, float] | None]] = []
        # the GPU speed path (channels_last, SDPA, compile, VAE policy), applied on load
        self.speed = speed or SpeedOptions.for_device(self.device)
        self.speed_report: dict[str, dict[str, Any]] = {}  # component key -> what was applied

    def use(self, model_set: ModelSet) -> None:
        """Serve `model_set` from now on (one job's checkpoint; the device lock keeps jobs
        apart). Components are keyed by their source, so another set's stay cached within
        the memory budget and a switch back reloads nothing that is still there."""
        with self._lock:
            if model_set is not self.model_set:
                self.model_set = model_set
                self.family = get_family(model_set.family)

    # ------------------------------------------------------------------ components
    def source(self, role: str) -> str:
        """Where `role` loads from: the model set's source, except the VAE in fp16 when the
        set has a VAE made for it (SDXL's own VAE overflows in fp16 and decodes black)."""
        if role == "vae" and self.dtype == torch.float16 and self.model_set.get("vae_fp16"):
            return self.model_set.get("vae_fp16")
        return self.model_set.source(role)

    def key(self, role: str) -> str:
        return f"{role}@{self.source(role)}"

    def component(self, role: str) -> Any:
        """The shared object for `role`, loading it on first use (see `prepare` to onload)."""
        with self._lock:
            k = self.key(role)
            entry = self._entries.get(k)
            if entry is None:
                entry = self._load(role, k)
            self._entries.move_to_end(k)
            return entry.obj

    def _record(self, kind: str, key: str, nbytes: int = 0) -> None:
        self.stats[kind] += 1
        self.stats[f"{kind}:{key}"] += 1
        msg = f"{kind} {key} ({nbytes / 2**20:.1f} MiB)"
        self.events.append(msg)
        log.info(msg)

    def _load(self, role: str, key: str) -> _Entry:
        source = self.source(role)
        t0 = time.perf_counter()
        try:
            obj = self._build(role, source)
        except ModelUnavailableError:
            raise
        except (OSError, EnvironmentError, ValueError) as err:  # noqa: UP024
            raise ModelUnavailableError(missing_weights_message(source, role, err)) from err
        nbytes = module_bytes(obj)
        if isinstance(obj, torch.nn.Module):
            obj.requires_grad_(False)
            obj.eval()
            self.speed_report[key] = prepare_component(role, obj, self.speed, self.device)
            if _watched(role) and not (self.speed.compile and role in COMPILED_ROLES):
                watch_blocks(obj)  # deadlines and Stop hold inside a step
            self._make_room(nbytes, keep=())
            self._to_device(obj, key, keep=())
        entry = _Entry(key, role, obj, nbytes, on_device=True)
        self._entries[key] = entry
        self._record("load", key, nbytes)
        log.info("loaded %s in %.2fs", key, time.perf_counter() - t0)
        return entry

    def _hub_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"local_files_only": self.offline}
        if self.hub_cache_dir:
            kw["cache_dir"] = self.hub_cache_dir
        return kw

    def _build(self, role: str, source: str) -> Any:
        """Load one component from a Hub id, a local folder or a single file: the family
        says how its roles load; the family-independent ones (preview decoder, image
        encoders, IP-Adapter) load here."""
        spec = self.family.component(role)
        if spec is not None and source == self.model_set.get("vae_fp16"):
            spec = replace(spec, subfolder=None)  # a VAE repo: its files at the root
        if spec is not None:
            if is_single_file(source) and role in self._single_file_roles():
                return self._from_single_file(role, source)
            return spec.load(source, self.dtype, self._hub_kwargs())
        kw = self._hub_kwargs()
        if role == "taesd":
            from diffusers import AutoencoderTiny

            return AutoencoderTiny.from_pretrained(source, dtype=self.dtype, **kw)
        if role == "image_encoder":
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

            model = CLIPVisionModelWithProjection.from_pretrained(source, dtype=self.dtype, **kw)
            model.image_processor = CLIPImageProcessor.from_pretrained(source, **kw)
            return model
        if role.startswith("ip_"):
            return self._build_ip(role, source)
        raise ValueError(f"don't know how to load role {role!r}")

    def _single_file_roles(self) -> tuple[str, ...]:
        """The roles an original-layout checkpoint holds: the base denoiser, the family's
        shared components and the scheduler config."""
        return ("unet", *self.family.shared.values(), "scheduler")

    def _build_ip(self, role: str, source: str) -> Any:
        """IP-Adapter roles (Remix): the adapter weights, its image encoder (in the adapter
        repo's `models/image_encoder`, as the reference IP-Adapter repo has it) and that
        encoder's CLIP text tower with projection (a full CLIPModel repo such as laion's, or
        a text model)."""
        from .ip_adapter import IP_ENCODER_SUBFOLDER, load_ip_adapter_weights

        kw = self._hub_kwargs()
        if role == "ip_adapter":
            if not self.family.ip_adapter_weight:
                raise ModelUnavailableError(f"{self.family.label} models have no IP-Adapter")
            return load_ip_adapter_weights(source, kw, self.dtype,
                                           self.family.ip_adapter_weight)
        if role == "ip_image_encoder":
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

            model = CLIPVisionModelWithProjection.from_pretrained(
                source, subfolder=IP_ENCODER_SUBFOLDER, dtype=self.dtype, **kw)
            try:
                processor = CLIPImageProcessor.from_pretrained(
                    source, subfolder=IP_ENCODER_SUBFOLDER, **kw)
            except OSError:  # h94's folder has none: CLIP's own 224 px preprocessing
                processor = CLIPImageProcessor()
            model.image_processor = processor
            return model
        if role == "ip_text_encoder":
            from transformers import AutoConfig, AutoTokenizer, CLIPTextModelWithProjection

            config = AutoConfig.from_pretrained(source, **kw)
            if config.model_type == "clip":  # a whole CLIP model: its text half
                text_config = config.text_config
                text_config.projection_dim = config.projection_dim
                config = text_config
            model = CLIPTextModelWithProjection.from_pretrained(
                source, config=config, dtype=self.dtype, **kw)
            model.tokenizer = AutoTokenizer.from_pretrained(source, use_fast=False, **kw)
            return model
        raise ValueError(f"don't know how to load role {role!r}")

    def _from_single_file(self, role: str, source: str) -> Any:
        """Split one A1111-style checkpoint into the shared components (safetensors only)."""
        if not source.endswith(".safetensors"):
            raise ModelUnavailableError(
                f"'{source}' is not a .safetensors file. Pickled checkpoints (.ckpt/.pt/.bin) can "
                "run arbitrary code when loaded, so the studio refuses them; convert it to "
                "safetensors first."
            )
        if not Path(source).exists():
            raise ModelUnavailableError(f"single-file checkpoint '{source}' does not exist")
        parts = self._single_file_parts.get(source, {})
        if role not in parts:
            # (Re)read the file and keep the parts not yet taken; each part is handed out
            # once, so a dropped component really frees its memory (no hidden pipeline copy).
            # the configs (model index, component configs, tokenizers) come from the set's
            # own folder where it has one, else from the family's base repo (the Hub cache
            # offline): the family is known from the file's keys, so nothing is guessed
            extra: dict[str, Any] = {"config": self._single_file_config()}
            if self.hub_cache_dir:
                extra["cache_dir"] = self.hub_cache_dir
            parts = self._single_file_parts[source] = self.family.single_file_parts(
                source, self.dtype, self.offline, extra)
        return parts.pop(role)

    def _single_file_config(self) -> str:
        """Where a single file's configs come from: the set's own folder (a built-in set);
        else the family's base repo when the Hub cache holds it; else the family's shipped
        configs (no Hub, no cache needed); else the base repo from the Hub."""
        own = self.model_set.extra.get("single_file_config")
        if own:
            return own
        base = self.family.model_set.base
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(base, "model_index.json",
                                             cache_dir=self.hub_cache_dir), str):
            return base
        shipped = self.family.write_configs(self.configs_dir) if self.configs_dir else None
        return str(shipped) if shipped else base

    # ------------------------------------------------------------------ memory budget
    def resident_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.on_device)

    def _make_room(self, incoming: int, keep: Iterable[str]) -> None:
        """Evict LRU components (not in `keep`) until `incoming` more bytes fit the budget."""
        if self.budget_bytes is None:
            return
        keep = set(keep)
        for key in list(self._entries):
            if self.resident_bytes() + incoming <= self.budget_bytes:
                return
            entry = self._entries[key]
            if key in keep or not entry.on_device or entry.nbytes == 0:
                continue
            self._evict(entry)
        if self.resident_bytes() + incoming > self.budget_bytes:
            log.warning(
                "memory budget %.1f MiB exceeded: the current call needs %.1f MiB resident",
                self.budget_bytes / 2**20, (self.resident_bytes() + incoming) / 2**20,
            )

    def _evict(self, entry: _Entry) -> None:
        if self.evict_policy == "offload":
            entry.obj.to("cpu")
            entry.on_device = False
            self._record("offload", entry.key, entry.nbytes)
        else:
            # On CPU there is nowhere cheaper to move it: drop it and the pipelines using it.
            del self._entries[entry.key]
            for name, keys in list(self._pipeline_keys.items()):
                if entry.key in keys:
                    self._pipelines.pop(name, None)
                    self._pipeline_keys.pop(name, None)
            self._loaded_loras.pop(entry.key, None)
            self._record("drop", entry.key, entry.nbytes)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def free_memory(self, keep: Iterable[str] = ()) -> None:
        """Evict everything not in `keep` (called after an out-of-memory error)."""
        keep = set(keep)
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.on_device and entry.nbytes and entry.key not in keep:
                    self._evict(entry)

    def _to_device(self, obj: torch.nn.Module, key: str, keep: Iterable[str]) -> None:
        """Move a model onto the device; out of memory there, evict every other model and
        try once more, so one failed move does not leave the device full for later calls."""
        try:
            obj.to(self.device)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not is_out_of_memory(err):
                raise
            log.warning("out of memory moving %s to %s: evicting the others", key, self.device)
            obj.to("cpu")
            self.free_memory(keep=[*keep, key])
            self._record("oom_retry", key)
            try:
                obj.to(self.device)
            except (torch.OutOfMemoryError, RuntimeError) as again:
                if not is_out_of_memory(again):
                    raise
                obj.to("cpu")
                raise DeviceMemoryError(
                    f"The {key.split('@')[0]} model does not fit in the {self.device.type} "
                    "memory even with every other model unloaded. Use a smaller dtype "
                    "(--dtype fp16) or a device with more memory."
                ) from again

    def prepare(self, roles: Iterable[str]) -> None:
        """Make `roles` resident on the device (evicting others past the budget); touch LRU."""
        with self._lock:
            keys = [self.key(r) for r in roles]
            for k in keys:
                entry = self._entries.get(k)
                if entry is not None and not entry.on_device:
                    self._make_room(entry.nbytes, keep=keys)
                    self._to_device(entry.obj, k, keep=keys)
                    entry.on_device = True
                    self._record("onload", k, entry.nbytes)
                if k in self._entries:
                    self._entries.move_to_end(k)

    def loaded_keys(self) -> list[str]:
        return list(self._entries)

    # ------------------------------------------------------------------ pipelines
    def pipeline(
        self,
        name: str,
        factory: Callable[[dict[str, Any]], Any],
        roles: dict[str, str],
    ) -> Any:
        """A pipeline assembled by `factory(components)` from registry components.

        `roles` maps the pipeline's constructor argument names to registry roles, e.g.
        `{"unet": "unet_inpaint", "vae": "vae", ...}`; a value may be a tuple of roles (a
        list of ControlNets). Pipelines are cached by name + the component keys they use, so
        a second use performs zero loads.
        """
        with self._lock:
            flat_roles: list[str] = []
            for r in roles.values():
                flat_roles.extend(r if isinstance(r, tuple) else (r,))
            # Load everything first, then make it resident (a load may evict earlier ones).
            components: dict[str, Any] = {}
            for arg, r in roles.items():
                if isinstance(r, tuple):
                    components[arg] = [self.component(x) for x in r]
                else:
                    components[arg] = self.component(r)
            self.prepare(flat_roles)
            keys = tuple(self.key(r) for r in flat_roles)
            cache_key = name + "|" + "|".join(keys)
            pipe = self._pipelines.get(cache_key)
            if pipe is None:
                pipe = factory(components)
                self._pipelines[cache_key] = pipe
                self._pipeline_keys[cache_key] = keys
                self.stats["pipeline_build"] += 1
            return pipe

    def new_scheduler(self, name: str, schedule: str = "default") -> Any:
        """A fresh scheduler `name` sampling with `schedule` for one call: a deep copy of a
        prototype built once per pair (building from config re-validates it each time, ~2 ms;
        a copy is ~0.5 ms). Schedulers hold per-run state (timesteps, step index), so no call
        shares one."""
        from .schedulers import make_scheduler

        with self._lock:
            key = (name, schedule, self.key("scheduler"))
            proto = self._schedulers.get(key)
            if proto is None:
                proto = self._schedulers[key] = make_scheduler(
                    name, self.component("scheduler"), schedule, self.family.defaults.ays)
            return copy.deepcopy(proto)

    # ------------------------------------------------------------------ LoRA adapters
    def begin_call(self) -> None:
        """A new pipeline call starts: adapters it loads count as in use from now on."""
        with self._lock:
            self._call += 1

    def ensure_lora(self, unet_role: str, adapter: str, source: str, pipe: Any) -> None:
        """Load a LoRA into a shared UNet once (every pipeline using that UNet sees it).

        At most `max_loras` stay loaded per UNet: before loading one more, the least
        recently used adapter not needed by the current call is unloaded (it loads again
        the next time a prompt asks for it).
        """
        with self._lock:
            ukey = self.key(unet_role)
            loaded = self._loaded_loras.setdefault(ukey, set())
            self._lora_used[(ukey, adapter)] = self._call
            if adapter in loaded:
                return
            self._unload_idle_loras(ukey, loaded, pipe)
            kw = self._hub_kwargs()
            source_path = Path(source)
            try:
                if source_path.is_file():
                    pipe.load_lora_weights(source, adapter_name=adapter)
                else:
                    pipe.load_lora_weights(source, adapter_name=adapter,
                                           weight_name=LORA_WEIGHT_NAME, **kw)
            except (OSError, EnvironmentError) as err:  # noqa: UP024
                raise ModelUnavailableError(missing_weights_message(source, "LoRA", err)) from err
            loaded.add(adapter)
            self._record("load", f"lora:{adapter}@{source}")

    def _unload_idle_loras(self, ukey: str, loaded: set[str], pipe: Any) -> None:
        idle = sorted((self._lora_used.get((ukey, a), -1), a) for a in loaded
                      if self._lora_used.get((ukey, a), -1) < self._call)
        while len(loaded) >= self.max_loras and idle:
            _, name = idle.pop(0)
            pipe.delete_adapters(name)
            loaded.discard(name)
            self._lora_used.pop((ukey, name), None)
            self._record("unload", f"lora:{name}")
        if len(loaded) >= self.max_loras:
            log.warning("this call uses %d LoRA adapters, more than --max-loras %d",
                        len(loaded) + 1, self.max_loras)

    def loras(self, unet_role: str) -> set[str]:
        return set(self._loaded_loras.get(self.key(unet_role), set()))
