"""Shared fixtures: the tiny model set (built once per run), a Studio on it, a served app."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny set is built; STUDIO_TEST_CACHE reuses one across runs (it is versioned)."""
    env = os.environ.get("STUDIO_TEST_CACHE")
    if env:
        return Path(env)
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_settings(model_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    from studio.settings import Settings
    from tests.support.upscalers import write_upscalers

    return Settings(
        models="tiny", cache_dir=model_cache, offline=True,
        # a random ESRGAN-family model and a pickled file (hires fix, /upscale)
        upscalers_dir=write_upscalers(tmp_path_factory.mktemp("upscalers")),
        outputs_dir=tmp_path_factory.mktemp("outputs"),
        concepts_dir=tmp_path_factory.mktemp("concepts"),  # not in a reused model cache
        max_file_mb=12,  # small, so the oversized-upload case stays cheap
        max_model_mb=20,  # model files over --max-file-mb pass, up to this
    )


@pytest.fixture(scope="session")
def tiny_model_set(tiny_settings):
    from studio.backend.models.builtin import tiny_model_set as build

    return build(tiny_settings.cache_dir)


@pytest.fixture(scope="session")
def tiny_xl_model_set(tiny_settings):
    """The random tiny SDXL set (`--models tiny-xl`), built once per run."""
    from studio.backend.models.builtin import tiny_xl_model_set as build

    return build(tiny_settings.cache_dir)


@pytest.fixture(scope="session")
def xl_app_url(tiny_settings, tiny_xl_model_set, tmp_path_factory) -> Iterator[str]:
    """The whole UI of a studio on the tiny SDXL set, served (API and browser tests)."""
    from dataclasses import replace

    from studio.backend.service import Studio
    from tests.support.serve import serving

    tmp = tmp_path_factory.mktemp("xl-served")
    studio = Studio(replace(tiny_settings, models="tiny-xl", outputs_dir=tmp / "out"),
                    model_set=tiny_xl_model_set)
    with serving(studio) as url:
        yield url


@pytest.fixture(scope="session")
def studio(tiny_settings, tiny_model_set):
    """One shared Studio on the tiny set (like the real app: one backend for every tab)."""
    from studio.backend.service import Studio

    return Studio(tiny_settings, model_set=tiny_model_set)


@pytest.fixture()
def fresh_studio(tiny_settings, tiny_model_set, tmp_path):
    """A Studio with its own registry (for tests that count loads or evictions)."""
    from studio.backend.service import Studio
    from studio.settings import Settings

    settings = Settings(models="tiny", cache_dir=tiny_settings.cache_dir, offline=True,
                        outputs_dir=tmp_path / "outputs", concepts_dir=tmp_path / "concepts")
    return Studio(settings, model_set=tiny_model_set)


@pytest.fixture(scope="session")
def served(studio) -> Iterator[tuple]:
    """(Blocks, URL): the full UI served on a free local port (gradio's own test fixture
    pattern), launched with the options launch.py uses."""
    from studio.ui.app import after_launch, build_app, launch_options

    demo = build_app(studio, queue_size=64)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **launch_options(studio.settings, studio, server_port=None))
    after_launch(demo, studio.settings)
    try:
        yield demo, url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def app_url(served) -> str:
    return served[1]


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


@pytest.fixture(scope="session", autouse=True)
def scripts_own_temp_folder(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> None:
    """Tests call the backend as a trusted script does, naming files in its own temp folder
    and model cache (STUDIO_TEST_CACHE may put that elsewhere), so those pass the file gate (a
    served studio allows only uploads and its own outputs). The gate's tests use folders
    outside them."""
    from studio.backend.files import allow_root

    allow_root(tmp_path_factory.getbasetemp())
    allow_root(model_cache)
