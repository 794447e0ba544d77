"""A Studio on the shipped toy models (assets/toy), shared by the semantic tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.threads import one_torch_thread

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "test-report" / "toy-semantics.json"


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """One torch thread for this package's tests (see tests/support/threads.py)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def toy_studio(tmp_path_factory: pytest.TempPathFactory):
    from studio.backend.models.builtin import TOY_DIR
    from toyworld.evaluate import toy_studio as build

    if not (TOY_DIR / "stable-diffusion" / "model_index.json").exists():
        pytest.fail(f"the toy models are missing from {TOY_DIR}; they ship with the project")
    return build(work=tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def report():
    """Record each check's numbers in test-report/toy-semantics.json (what README quotes)."""
    results: dict[str, dict] = {}

    def record(ev) -> None:
        print(ev.line())
        results[ev.name] = {"n": ev.n, **ev.metrics, "seconds_per_image": ev.seconds_per_image,
                            **ev.notes}

    yield record
    if results:
        REPORT.parent.mkdir(exist_ok=True)
        old = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        REPORT.write_text(json.dumps({**old, **results}, indent=2))


@pytest.fixture(scope="session")
def toy_xl_studio(tmp_path_factory: pytest.TempPathFactory):
    """A Studio on the shipped toy SDXL models (assets/toy-xl)."""
    from studio.backend.models.builtin import TOY_XL_DIR, toy_xl_available
    from toyworld.evaluate import toy_studio as build

    if not toy_xl_available():
        pytest.fail(f"the toy SDXL models are missing from {TOY_XL_DIR}; they ship with the "
                    "project")
    return build(work=tmp_path_factory.mktemp("toy-xl"), name="toy-xl")
