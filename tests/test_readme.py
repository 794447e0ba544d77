"""README.md stays true: its endpoint table is the task table, its two commands are there."""

from __future__ import annotations

from pathlib import Path

from studio.backend.tasks import TASKS, readme_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_endpoint_table_matches_the_task_table():
    """Regenerate it with `python -m studio.backend.tasks` after adding a task."""
    assert readme_table() in README


def test_every_endpoint_has_a_gradio_client_example():
    missing = [name for name in TASKS if f'api_name="/{name}"' not in README]
    assert missing == []


def test_the_two_commands_are_there():
    assert "bash scripts/setup.sh && .venv/bin/python launch.py" in README
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in README
    assert '-m "not slow"' in README  # the fast tier


def test_capability_matrix_is_the_families_own():
    """Regenerate it with `python -m studio.backend.models` after changing a family."""
    from studio.backend.models.families import capability_matrix

    assert capability_matrix() in README
