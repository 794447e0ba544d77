"""Studio settings: one dataclass filled from CLI flags, then environment variables, then defaults.

Every flag has a `STUDIO_<NAME>` environment variable (handy on Hugging Face Spaces, where
there is no command line). Flags win over the environment.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

MODEL_SETS = ("auto", "sd15", "sdxl", "toy", "toy-xl", "tiny", "tiny-xl")
# Budgets when anyone can reach the studio (a share link, a non-local host, a Space): one
# visitor must not hold the GPU. 60 megapixel-steps is e.g. 512x512 x 50 steps with
# guidance (2 UNet passes) with room to spare, or 1024x1024 x 28 steps.
PUBLIC_DEFAULTS = {"max_job_work": 60.0, "max_job_seconds": 300.0, "max_jobs_per_session": 1}
# On your own machine nothing is limited: scripts may queue as much work as they like.
LOCAL_DEFAULTS = {"max_job_work": 0.0, "max_job_seconds": 0.0, "max_jobs_per_session": 0}
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "fp16", "bf16")
# The GPU speed path (studio.backend.models.speed holds the same tuples; settings import no
# torch, so they are spelled here too and a test keeps them equal).
ON_OFF_AUTO = ("auto", "on", "off")
VAE_UPCAST = ("auto", "always", "never")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BACKENDS = ("local", "ray")  # where the models run: this process, or Ray Serve replicas


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "controllable-studio"


@dataclass
class Settings:
    """Everything the studio needs to know before it starts.

    `models` is a model-set name (see MODEL_SETS) or a path to a local diffusers folder or a
    single-file `.safetensors` checkpoint, used as the base model of its family's set.
    """

    models: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    memory_budget_gb: float = 0.0  # 0 = no budget (keep everything resident)
    outputs_dir: Path = field(default_factory=lambda: Path("outputs"))
    cache_dir: Path = field(default_factory=_default_cache_dir)
    # Hosting platforms (Hugging Face Spaces) say where to listen through Gradio's variables.
    host: str = field(default_factory=lambda: os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    share: bool = False
    auth: str | None = None  # "user:pass"
    offline: bool = False
    queue_size: int = 64
    base_model: str | None = None  # overrides the base model of the sd15 set
    # a folder of single-file checkpoints (*.safetensors, as A1111's models/Stable-diffusion)
    # the model picker offers besides the Hub cache
    models_dir: Path | None = None
    # a folder of upscaler models (ESRGAN family, *.safetensors, as A1111's models/ESRGAN):
    # hires fix and /upscale offer each by its file's stem
    upscalers_dir: Path | None = None
    detector: str | None = None  # the words -> boxes detector (default: the model set's)
    concepts_dir: Path | None = None  # the concept library (default: <cache_dir>/concepts)
    # Budgets; None = the default for where the studio listens (see PUBLIC_DEFAULTS).
    max_job_work: float | None = None  # megapixel-steps x UNet passes per job; 0 = no limit
    max_job_seconds: float | None = None  # a job running longer is stopped; 0 = no limit
    max_jobs_per_session: int | None = None  # waiting or running per visitor; 0 = no limit
    max_file_mb: float = 50.0  # largest upload (an image, a mask, a picture of a concept)
    # largest model file (a LoRA or an embedding imported in Concepts: SDXL LoRAs from model
    # sites are 50-800 MB)
    max_model_mb: float = 1024.0
    max_loras: int = 8  # LoRA adapters kept loaded in a shared UNet (idle ones unloaded)
    a1111_api: bool = True  # serve AUTOMATIC1111's REST API (/sdapi/v1, /controlnet)
    previews: bool = True  # live previews (TAESD) while an image forms
    public_history: bool = False  # a public studio without a login lists its outputs anyway
    preview_interval: float = 0.25  # seconds at least between two previews
    api_auth: str | None = None  # "user:pass" for that API (HTTP basic auth)
    a1111_api_public: bool = False  # a public studio serves that API without a login
    # web pages of other origins allowed to call the studio from a browser (CORS),
    # comma-separated, e.g. "https://app.example.com"; "*" = any; none by default
    cors_allow_origins: str = ""
    # proxies whose X-Forwarded-For names the visitor (comma-separated addresses); on a
    # Hugging Face Space the platform's proxy is trusted
    trusted_proxies: str = ""
    # GPU speed path (README "Speed on a GPU")
    channels_last: str = "auto"  # UNets and ControlNets in channels_last; auto = on CUDA only
    compile: bool = False  # torch.compile the shared UNet (warm-up run at start-up)
    compile_mode: str = "default"  # torch.compile mode
    vae_slicing: bool = True  # a batch decodes one image at a time (less peak memory)
    vae_tiling: str = "auto"  # decode/encode in tiles; auto = above 1024 px a side
    vae_upcast: str = "auto"  # fp16 VAE: auto = fp32 again on NaN/inf; always; never
    # Scale-out (README "Scale out on Ray Serve")
    backend: str = "local"  # local = this process; ray = Ray Serve replicas, one device each
    replicas: int = 1  # replicas when not autoscaling
    min_replicas: int = 0  # autoscaling between min and max replicas (max 0 = off)
    max_replicas: int = 0
    ray_address: str | None = None  # join this Ray cluster ("auto"); None = start a local one
    replica_threads: int = 0  # torch threads per CPU replica; 0 = the cores shared out

    def __post_init__(self) -> None:
        self.outputs_dir = Path(self.outputs_dir)
        self.cache_dir = Path(self.cache_dir)
        if self.concepts_dir is not None:
            self.concepts_dir = Path(self.concepts_dir)
        if self.models_dir is not None:
            self.models_dir = Path(self.models_dir)
        if self.upscalers_dir is not None:
            self.upscalers_dir = Path(self.upscalers_dir)
        defaults = PUBLIC_DEFAULTS if self.public else LOCAL_DEFAULTS
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with a readable message for impossible settings."""
        if self.models not in MODEL_SETS and not Path(self.models).exists():
            raise ValueError(
                f"--models {self.models!r} is neither a model set ({', '.join(MODEL_SETS)}) nor "
                "an existing local folder or .safetensors file."
            )
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (self.memory_budget_gb >= 0):
            raise ValueError("--memory-budget must be >= 0 GB (0 means no budget)")
        if not (0 < self.port < 65536):
            raise ValueError(f"--port must be in 1..65535, got {self.port}")
        if self.queue_size < 1:
            raise ValueError("--queue-size must be at least 1")
        if self.auth is not None and (":" not in self.auth or self.auth.startswith(":")):
            raise ValueError("--auth must look like user:password")
        for flag, value in (("--max-job-work", self.max_job_work),
                            ("--max-job-seconds", self.max_job_seconds),
                            ("--max-jobs-per-session", self.max_jobs_per_session)):
            if not value >= 0:
                raise ValueError(f"{flag} must be >= 0 (0 means no limit), got {value}")
        if not self.max_file_mb > 0:
            raise ValueError(f"--max-file-mb must be more than 0, got {self.max_file_mb}")
        if not self.max_model_mb > 0:
            raise ValueError(f"--max-model-mb must be more than 0, got {self.max_model_mb}")
        if self.max_loras < 1:
            raise ValueError(f"--max-loras must be at least 1, got {self.max_loras}")
        if not self.preview_interval >= 0:
            raise ValueError(f"--preview-interval must be >= 0 seconds, got "
                             f"{self.preview_interval}")
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"--cors-allow-origins: {origin!r} is not an origin; write "
                                 "scheme://host[:port] with no path, e.g. http://localhost:3000")
        if self.api_auth is not None and (":" not in self.api_auth
                                          or self.api_auth.startswith(":")):
            raise ValueError("--api-auth must look like user:password")
        for flag, value, allowed in (("--channels-last", self.channels_last, ON_OFF_AUTO),
                                     ("--vae-tiling", self.vae_tiling, ON_OFF_AUTO),
                                     ("--vae-upcast", self.vae_upcast, VAE_UPCAST),
                                     ("--compile-mode", self.compile_mode, COMPILE_MODES)):
            if value not in allowed:
                raise ValueError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
        self._validate_scale_out()

    def _validate_scale_out(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got "
                             f"{self.backend!r}")
        for flag, value, low in (("--replicas", self.replicas, 1),
                                 ("--min-replicas", self.min_replicas, 0),
                                 ("--max-replicas", self.max_replicas, 0),
                                 ("--replica-threads", self.replica_threads, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{flag} must be a whole number >= {low}, got {value!r}")
        if self.max_replicas and self.min_replicas > self.max_replicas:
            raise ValueError(f"--min-replicas ({self.min_replicas}) is more than "
                             f"--max-replicas ({self.max_replicas})")
        if self.backend == "local" and (self.replicas > 1 or self.max_replicas
                                        or self.ray_address):
            raise ValueError("--replicas, --max-replicas and --ray-address need --backend ray")

    @property
    def public(self) -> bool:
        """True when people other than this machine's user can reach the studio: a
        non-loopback host, a share link, or a Hugging Face Space."""
        loopback = self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")
        return bool(self.share or not loopback or os.environ.get("SPACE_ID"))

    @property
    def cors_origins(self) -> list[str]:
        """--cors-allow-origins as a list (trailing slashes dropped: browsers send none)."""
        return [o.strip().rstrip("/") for o in self.cors_allow_origins.split(",") if o.strip()]

    @property
    def auth_pair(self) -> tuple[str, str] | None:
        if not self.auth:
            return None
        user, _, password = self.auth.partition(":")
        return user, password

    @property
    def memory_budget_bytes(self) -> int | None:
        if not self.memory_budget_gb:
            return None
        return int(self.memory_budget_gb * 1024**3)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launch.py",
        description="Controllable image-generation studio (Gradio UI + named API).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--models",
        help="model set: auto (real SD1.5 weights when cached or the Hub is reachable, "
        "otherwise the trained toy world), sd15, sdxl, toy / toy-xl (built-in miniature "
        "world of coloured shapes, on SD1.5's / SDXL's architecture), tiny / tiny-xl "
        "(random SD1.5 / SDXL test models), or a path to a diffusers folder / single "
        ".safetensors file (SD1.5 or SDXL)",
    )
    p.add_argument(
        "--base-model", help="Hub id, local folder or .safetensors used as the base model"
    )
    p.add_argument(
        "--models-dir", help="a folder of single-file checkpoints (.safetensors, SD1.5 or "
        "SDXL, as A1111's models/Stable-diffusion): the model picker lists them beside the "
        "Hugging Face cache")
    p.add_argument(
        "--upscalers-dir", help="a folder of upscaler models (ESRGAN family: RealESRGAN, "
        "SwinIR, ...; .safetensors only, as A1111's models/ESRGAN): hires fix and Upscale "
        "offer each by its file name; the toy set brings its own")
    p.add_argument(
        "--detector", help="Hub id or local folder of the detector that finds what words name "
        "(Grounding DINO, OWL-ViT or OWLv2; default IDEA-Research/grounding-dino-tiny)"
    )
    p.add_argument("--device", choices=DEVICES, help="compute device (auto picks CUDA, MPS, CPU)")
    p.add_argument("--dtype", choices=DTYPES, help="weights dtype (auto: fp16 on GPU, fp32 on CPU)")
    p.add_argument(
        "--memory-budget", dest="memory_budget_gb", type=float,
        help="GB of models kept on the device before least-recently-used ones are offloaded "
        "(0 = no budget)",
    )
    p.add_argument("--outputs-dir", type=Path, help="folder where every generated image is saved")
    p.add_argument("--cache-dir", type=Path, help="folder for built-in model sets and caches")
    p.add_argument(
        "--concepts-dir", type=Path,
        help="folder of the concept library (default: <cache-dir>/concepts)",
    )
    p.add_argument("--host", help="interface to listen on (0.0.0.0 to expose on the network)")
    p.add_argument("--port", type=int, help="port to listen on")
    p.add_argument("--share", action="store_true", default=None, help="create a public Gradio link")
    p.add_argument("--auth", help="require a login, as user:password")
    p.add_argument(
        "--offline", action="store_true", default=None,
        help="never contact the Hugging Face Hub (use cached or local weights only)",
    )
    p.add_argument("--queue-size", type=int, help="maximum number of waiting requests")
    p.add_argument(
        "--max-job-work", type=float,
        help="largest job in megapixel-steps x UNet passes (512x512 x 50 steps with guidance "
        "= 26); bigger requests are refused. 0 = no limit. Default: 60 when public, else 0",
    )
    p.add_argument(
        "--max-job-seconds", type=float,
        help="a job running longer is stopped. 0 = no limit. Default: 300 when public, else 0",
    )
    p.add_argument(
        "--max-jobs-per-session", type=int,
        help="jobs one visitor may have waiting or running. 0 = no limit. Default: 1 when "
        "public, else 0",
    )
    p.add_argument("--max-file-mb", type=float,
                   help="largest upload in MB (an image, a mask; model files: --max-model-mb)")
    p.add_argument("--max-model-mb", type=float,
                   help="largest model file in MB (a LoRA or embedding imported in Concepts)")
    p.add_argument("--max-loras", type=int,
                   help="LoRA adapters kept loaded per UNet; idle ones are unloaded past it")
    p.add_argument("--no-previews", dest="previews", action="store_false", default=None,
                   help="no live previews while an image forms (TAESD, <= 10%% of the time)")
    p.add_argument("--public-history", action="store_true", default=None,
                   help="a public studio without --auth still lists every output "
                        "(Outputs tab, /history): everyone sees everyone's prompts")
    p.add_argument("--preview-interval", type=float,
                   help="seconds at least between two live previews")
    p.add_argument("--no-a1111-api", dest="a1111_api", action="store_false", default=None,
                   help="do not serve the AUTOMATIC1111-compatible API (/sdapi/v1, /controlnet)")
    p.add_argument("--api-auth", help="require HTTP basic auth user:password for that API")
    p.add_argument("--a1111-api-public", action="store_true", default=None,
                   help="serve that API without --api-auth even when the studio is public")
    p.add_argument("--cors-allow-origins",
                   help="comma-separated origins of web pages (other than the studio's own) "
                        "allowed to call the studio and its APIs from a browser, e.g. "
                        "http://localhost:3000 (as A1111's flag); * = any")
    p.add_argument("--trusted-proxies",
                   help="comma-separated addresses of reverse proxies in front of the studio: "
                        "their X-Forwarded-For names the visitor (per-visitor job limits)")
    _add_speed_flags(p)
    _add_scale_out_flags(p)
    return p


def _add_scale_out_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out (Ray Serve; pip install 'ray[serve]')")
    g.add_argument("--backend", choices=BACKENDS,
                   help="local: the models run in this process; ray: on Ray Serve replicas, "
                        "one device and one job at a time each")
    g.add_argument("--replicas", type=int, help="replicas of the backend (--backend ray)")
    g.add_argument("--min-replicas", type=int, help="autoscaling: fewest replicas")
    g.add_argument("--max-replicas", type=int,
                   help="autoscaling: most replicas (0 = a fixed --replicas)")
    g.add_argument("--ray-address",
                   help="join this Ray cluster (auto = the one `ray start` made here); "
                        "default: start a local one")
    g.add_argument("--replica-threads", type=int,
                   help="torch threads per CPU replica (0 = the cores shared out)")


def _add_speed_flags(p: argparse.ArgumentParser) -> None:
    """The GPU speed path: safe defaults, each one can be turned off or forced."""
    p.add_argument("--channels-last", choices=ON_OFF_AUTO,
                   help="channels_last memory format for UNets and ControlNets "
                   "(auto: on with CUDA, off on CPU and MPS)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the shared UNet (compiles in a warm-up run at start-up; "
                   "skipped with a log line where torch.compile cannot run)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="torch.compile mode for --compile (default: default)")
    p.add_argument("--no-vae-slicing", dest="vae_slicing", action="store_false", default=None,
                   help="decode a batch in one VAE pass (default: one image at a time, less "
                   "peak memory)")
    p.add_argument("--vae-tiling", choices=ON_OFF_AUTO,
                   help="VAE in tiles: auto = above 1024 px a side (bounded memory; tiles "
                   "leave faint seams), on = whenever larger than one tile, off = never")
    p.add_argument("--vae-upcast", choices=VAE_UPCAST,
                   help="fp16 VAE: auto = decode again in fp32 (and keep doing so) when fp16 "
                   "gives NaN/inf, always = decode in fp32, never = leave it in fp16")


def _coerce(value: str, typ: type) -> object:
    if typ is bool:
        return value.strip().lower() in ("1", "true", "yes", "on")
    return typ(value)


def settings_from_args(
    argv: list[str] | None = None, env: dict[str, str] | None = None
) -> Settings:
    """Parse CLI flags (highest priority), then `STUDIO_*` environment variables."""
    env = dict(os.environ if env is None else env)
    args = vars(build_parser().parse_args(argv))
    types = {
        "memory_budget_gb": float, "port": int, "queue_size": int,
        "share": bool, "offline": bool, "outputs_dir": Path, "cache_dir": Path,
        "concepts_dir": Path, "models_dir": Path, "upscalers_dir": Path,
        "max_job_work": float, "max_job_seconds": float,
        "max_jobs_per_session": int, "max_file_mb": float, "max_model_mb": float,
        "max_loras": int,
        "a1111_api": bool, "a1111_api_public": bool, "previews": bool,
        "preview_interval": float, "public_history": bool, "compile": bool,
        "vae_slicing": bool, "replicas": int, "min_replicas": int, "max_replicas": int,
        "replica_threads": int,
    }
    values: dict[str, object] = {}
    for f in fields(Settings):
        cli = args.get(f.name)
        if cli is not None:
            values[f.name] = cli
            continue
        env_value = env.get(f"STUDIO_{f.name.upper()}")
        if env_value not in (None, ""):
            values[f.name] = _coerce(env_value, types.get(f.name, str))
    if env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") and "offline" not in values:
        values["offline"] = True
    return Settings(**values)
