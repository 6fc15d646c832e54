"""The layering rule of docs/architecture.md, checked on the source tree (ast, nothing is imported).

utils -> arguments -> gaussian_renderer -> scene -> jobs (segmentation, pruning, features, affordance, training)
-> apps (viewer)
-> scripts: a module imports only from its own layer or below; a job imports another job only through the
named shared modules; no module imports a script.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"utils": 0, "arguments": 1, "gaussian_renderer": 2, "scene": 3,
          "segmentation": 4, "pruning": 4, "features": 4, "affordance": 4, "training": 4, "viewer": 5}
JOBS = {p for p, layer in LAYERS.items() if layer == 4}
SCRIPT_LAYER = 6
# Modules of one job that the other jobs may import (docs/architecture.md, "Shared modules")
SHARED = {
    "segmentation.voting": "votes from per-view label maps and the per-Gaussian decision (the paper's method)",
    "segmentation.labels": "per-Gaussian labels read back and rendered into a view as a label map",
    "features.extractors": "dense 2D feature maps (classic / DINO / DINOv2) and their PCA",
}
SKIP_DIRS = {"tests", "benchmarks", "output", "docs", "submodules", ".venv", ".ci", ".git"}


def source_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if rel.parts[0] in SKIP_DIRS or any(part.startswith(".") for part in rel.parts):
            continue
        out.append(p)
    return out


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in ``path``, lazy and TYPE_CHECKING ones included; ``from a import
    b`` names ``a.b`` when that is a module of the tree, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(root, path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_module = (root / sub.replace(".", "/")).with_suffix(".py").is_file() or \
                    (root / sub.replace(".", "/") / "__init__.py").is_file()
                found.append((node.lineno, sub if is_module else base))
    return found


def violations(root: Path) -> list[str]:
    """Every import of the tree below ``root`` that breaks the rule, as ``file:line: what``."""
    # a top-level script; a package of the same name wins an import (affordance/ over affordance.py)
    scripts = {p.stem for p in root.glob("*.py") if not (root / p.stem / "__init__.py").is_file()}
    out = []
    for path in source_files(root):
        src = module_name(root, path)
        is_script = path.parent == root
        src_top = "" if is_script else src.split(".")[0]
        src_layer = SCRIPT_LAYER if is_script else LAYERS.get(src_top)
        if src_layer is None:
            continue
        for line, target in imported_modules(root, path):
            top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line}: {src} imports {target}"
            if top in scripts:
                out.append(f"{where} (a script: nothing imports a script)")
            elif top not in LAYERS or top == src_top:
                continue
            elif LAYERS[top] > src_layer:
                out.append(f"{where} (upward: layer {LAYERS[top]} from layer {src_layer})")
            elif top in JOBS and src_top in JOBS and target not in SHARED:
                out.append(f"{where} (sideways between jobs; shared modules: {', '.join(sorted(SHARED))})")
    return out


def test_the_tree_follows_the_layering_rule() -> None:
    found = violations(ROOT)
    assert not found, "layering rule broken (docs/architecture.md):\n" + "\n".join(found)


def test_every_layer_and_shared_module_is_documented() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name in [*LAYERS, *SHARED]:
        assert f"`{name}" in doc, f"docs/architecture.md does not name {name}"
    for name in SHARED:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name


@pytest.mark.parametrize("path, code, needle", [
    ("utils/bad.py", "from scene.cameras import Camera\n", "upward"),
    ("utils/bad.py", "def f():\n    import gaussian_renderer\n", "upward"),          # lazy imports count
    ("arguments/bad.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from scene import views\n",
     "upward"),
    ("scene/bad.py", "from segmentation import export\n", "upward"),
    ("pruning/bad.py", "from segmentation.pipeline import SegmentConfig\n", "sideways"),
    ("affordance/bad.py", "from features import clustering\n", "sideways"),
    ("segmentation/bad.py", "import segment\n", "script"),
    ("train.py", "import segment\n", "script"),
    ("affordance.py", "import utils.bad_helper\nfrom segmentation.pipeline import x\nimport segment\n", "script"),
])
def test_a_deliberate_violation_is_reported(tmp_path: Path, path: str, code: str, needle: str) -> None:
    """The checker can fail: a copy of the package skeleton plus one offending file."""
    for pkg in LAYERS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for mod in ("scene/cameras.py", "scene/views.py", "segmentation/export.py", "segmentation/pipeline.py",
                "segmentation/voting.py", "features/clustering.py", "segment.py"):
        (tmp_path / mod).write_text("")
    (tmp_path / "affordance" / "ok.py").write_text("from segmentation.voting import x\nfrom scene import views\n")
    assert violations(tmp_path) == []
    (tmp_path / path).write_text(code)
    found = violations(tmp_path)
    assert len(found) == 1 and needle in found[0] and found[0].startswith(path), found
