"""Settings from flags and environment; launch.py --help documents every flag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from studio.settings import Settings, build_parser, settings_from_args

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_safe():
    s = settings_from_args([], env={})
    assert s.host == "127.0.0.1" and s.models == "auto" and not s.share and s.auth is None


def test_flags_override_environment():
    env = {"STUDIO_PORT": "9000", "STUDIO_MODELS": "tiny", "STUDIO_SHARE": "true"}
    s = settings_from_args(["--port", "9100"], env=env)
    assert s.port == 9100 and s.models == "tiny" and s.share is True


def test_cors_origins_parse_and_bad_ones_are_named():
    s = settings_from_args(["--cors-allow-origins", "http://a.example:3000/, https://b.example"],
                           env={})
    assert s.cors_origins == ["http://a.example:3000", "https://b.example"]
    assert settings_from_args([], env={}).cors_origins == []
    with pytest.raises(ValueError, match="'a.example/path' is not an origin"):
        settings_from_args(["--cors-allow-origins", "a.example/path"], env={})


def test_all_fields_parse():
    s = settings_from_args(
        ["--models", "tiny", "--device", "cpu", "--dtype", "fp32", "--memory-budget", "2.5",
         "--outputs-dir", "o", "--host", "0.0.0.0", "--auth", "me:pw", "--offline",
         "--queue-size", "8"], env={},
    )
    assert s.memory_budget_bytes == int(2.5 * 1024**3)
    assert s.auth_pair == ("me", "pw") and s.offline and s.queue_size == 8
    assert s.outputs_dir == Path("o")


def test_detector_flag_chooses_the_text_mask_detector(tmp_path, tiny_settings,
                                                       tiny_model_set):
    from dataclasses import replace

    from studio.backend.service import Studio

    s = settings_from_args(["--detector", "google/owlv2-base-patch16-ensemble"], env={})
    assert s.detector == "google/owlv2-base-patch16-ensemble"
    assert settings_from_args([], env={"STUDIO_DETECTOR": "/models/owl"}).detector == (
        "/models/owl")
    studio = Studio(replace(tiny_settings, outputs_dir=tmp_path, detector=str(tmp_path)),
                    model_set=tiny_model_set)
    sources = studio.annotators.sources
    assert sources["grounding"] == str(tmp_path)
    assert sources["sam"] == tiny_model_set.annotators["sam"]  # the others kept


def test_budget_flags_and_environment(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    s = settings_from_args(["--max-job-work", "12.5", "--max-jobs-per-session", "3"],
                           env={"STUDIO_MAX_JOB_SECONDS": "90", "STUDIO_MAX_FILE_MB": "20"})
    assert (s.max_job_work, s.max_jobs_per_session, s.max_job_seconds, s.max_file_mb) == (
        12.5, 3, 90.0, 20.0)


def test_scale_out_flags_and_environment():
    s = settings_from_args(["--backend", "ray", "--replicas", "3", "--ray-address", "auto"],
                           env={"STUDIO_REPLICA_THREADS": "2"})
    assert (s.backend, s.replicas, s.ray_address, s.replica_threads) == ("ray", 3, "auto", 2)
    s = settings_from_args(["--backend", "ray", "--min-replicas", "1", "--max-replicas", "4"],
                           env={})
    from studio.backend.serve import ScaleOut, deployment_options

    scale = ScaleOut.from_settings(s)
    assert scale.most == 4
    opts = deployment_options(scale, gpus=8)
    assert opts["max_ongoing_requests"] == 1 and opts["ray_actor_options"]["num_gpus"] == 1
    assert opts["autoscaling_config"]["max_replicas"] == 4 and "num_replicas" not in opts
    cpu = deployment_options(ScaleOut(replicas=2), gpus=0)
    assert cpu["num_replicas"] == 2 and "num_gpus" not in cpu["ray_actor_options"]


def test_hf_hub_offline_env_means_offline():
    assert settings_from_args([], env={"HF_HUB_OFFLINE": "1"}).offline


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": "nonsense"}, "neither a model set"),
        ({"device": "tpu"}, "--device must be one of"),
        ({"port": 0}, "--port must be in"),
        ({"auth": "nopassword"}, "--auth must look like user:password"),
        ({"memory_budget_gb": -1}, "--memory-budget must be >= 0"),
        ({"max_job_work": -1}, "--max-job-work must be >= 0"),
        ({"max_jobs_per_session": -2}, "--max-jobs-per-session must be >= 0"),
        ({"max_file_mb": 0}, "--max-file-mb must be more than 0"),
        ({"max_loras": 0}, "--max-loras must be at least 1"),
        ({"backend": "slurm"}, "--backend must be one of local, ray"),
        ({"backend": "ray", "replicas": 0}, "--replicas must be a whole number >= 1"),
        ({"backend": "ray", "min_replicas": 3, "max_replicas": 2},
         r"--min-replicas \(3\) is more than --max-replicas \(2\)"),
        ({"replicas": 2}, "--replicas, --max-replicas and --ray-address need --backend ray"),
        ({"ray_address": "auto"}, "need --backend ray"),
    ],
)
def test_bad_settings_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--help"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in out
    assert "--models" in out and "tiny" in out


def test_launch_rejects_bad_flags_with_a_message():
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--port", "99999"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert "--port must be in 1..65535" in proc.stderr
