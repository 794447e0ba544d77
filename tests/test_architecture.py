"""The shape of the code, checked: layers, no import cycles, short functions, few flat modules.

Read from the source with `ast` (nothing is imported), so these run in a second and fail with
the module, function or cycle to fix.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("studio", "annotators")
MAX_FUNCTION_LINES = 120
MAX_FLAT_BACKEND_MODULES = 12
MAX_UI_BUILD_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every project module `name` imports, at module level or inside functions."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        own = _ancestors(name)
        for target in targets:
            # the longest known module the import names (a package, a module, or its member)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if not target or target == name:
                continue
            yield target
            # importing a.b.c runs the __init__ of a and a.b first (the importer's own
            # packages have started already)
            yield from (p for p in _ancestors(target) if p in known and p not in own)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imports(name, path, known)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_even_through_function_local_imports():
    assert _cycles(_graph()) == []


def test_layers_point_downwards():
    """ui, api -> backend -> annotators: the backend never imports gradio or the layers above
    it, the A1111 API (plain FastAPI) no gradio either, annotators neither."""
    third_party = {"gradio", "diffusers", "torch"}
    offenders = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        roots = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                roots.add(node.module.split(".")[0])
        if name.startswith(("studio.backend", "studio.api", "annotators")) and "gradio" in roots:
            offenders.append(f"{name} imports gradio")
        if name.startswith("studio.backend") and _imports_any(tree, ("studio.ui", "studio.api")):
            offenders.append(f"{name} imports a layer above it")
        if name.startswith("annotators") and ("studio" in roots or "diffusers" in roots):
            offenders.append(f"{name} imports {roots & {'studio', 'diffusers'}}")
        if name.startswith("studio.ui") and roots & (third_party - {"gradio"}):
            offenders.append(f"{name} imports {roots & third_party - {'gradio'}}")
    assert offenders == []


def _imports_any(tree: ast.AST, prefixes: tuple[str, ...]) -> bool:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.append(node.module)
    return any(n == p or n.startswith(p + ".") for n in names for p in prefixes)


def test_no_function_is_longer_than_120_lines():
    long = []
    for name, path in _modules().items():
        if not name.startswith("studio"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                limit = MAX_UI_BUILD_LINES if (name.startswith("studio.ui")
                                               and node.name == "build") else MAX_FUNCTION_LINES
                if lines > limit:
                    long.append(f"{name}.{node.name}: {lines} lines (limit {limit})")
    assert long == []


def test_backend_has_at_most_twelve_flat_modules():
    flat = [p.name for p in (ROOT / "studio" / "backend").glob("*.py") if p.name != "__init__.py"]
    assert len(flat) <= MAX_FLAT_BACKEND_MODULES, sorted(flat)


# The model-family seam: only a family's own module (and the builders of its tiny test set)
# names its classes and Hub repo ids; every task reaches them through `registry.family`.
FAMILY_PACKAGE = "studio.backend.models.families"
FAMILY_BUILDERS = ("studio.backend.models.tiny", "studio.backend.models.tiny_xl")  # tiny sets
# Classes a family-independent role loads too: the IP-Adapter image encoder's CLIP text tower
# (text diffs, `ModelRegistry._build_ip`) is a CLIPTextModelWithProjection like SDXL's second
# text encoder.
SHARED_CLASSES = {"CLIPTextModelWithProjection"}


def _family_names() -> tuple[set[str], set[str]]:
    """(class names, repo ids) the families declare."""
    from studio.backend.models.families import all_families

    classes, repos = set(), set()
    for family in all_families():
        paths = [c.cls for c in family.components.values()] + list(family.pipelines.values())
        paths.append(family.single_file)
        classes |= {p.rpartition(".")[2] for p in paths if p} - SHARED_CLASSES
        repos |= {v for v in family.model_set.repos.values() if "/" in v}
    return classes, repos


def test_only_family_modules_name_family_classes_and_repo_ids():
    """A pipeline class, a component class or a repo id of a family, named in code anywhere
    but the family's module, is an SD1.5 (or SDXL ...) assumption the seam should hold."""
    classes, repos = _family_names()
    assert {"StableDiffusionPipeline", "UNet2DConditionModel", "CLIPTextModel"} <= classes
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in repos
    offenders = []
    for name, path in _modules().items():
        if name.startswith(FAMILY_PACKAGE) or name in FAMILY_BUILDERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            named = None
            if isinstance(node, ast.alias):
                named = node.name.rpartition(".")[2]
            elif isinstance(node, ast.Name):
                named = node.id
            elif isinstance(node, ast.Attribute):
                named = node.attr
            if named in classes:
                offenders.append(f"{name}:{node.lineno} names {named}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                offenders += [f"{name}:{node.lineno} names {r}" for r in repos
                              if r in node.value]
    assert offenders == []


def test_every_family_says_how_it_does_each_generating_task():
    """Each task with a request (what a tab generates) has a method or a reason per family,
    so the capability matrix has no blank cell and an unsupported pair is refused early."""
    from studio.backend.models.families import all_families
    from studio.backend.tasks import TASKS

    tasks = {name for name, t in TASKS.items() if t.request is not None}
    missing = [f"{f.name}: {sorted(tasks - set(f.tasks))}" for f in all_families()
               if tasks - set(f.tasks)]
    assert missing == []
