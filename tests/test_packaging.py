"""The install files agree with each other and with the README (a drifting install is a broken install)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (test extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        # environment.yml fixes Python >= 3.11, so backports with a python_version marker are not needed there
        wanted.update({_name(r): r.replace(" ", "") for r in extra if "python_version" not in r})
    env_lines = [ln.strip()[2:].strip() for ln in (ROOT / "environment.yml").read_text().splitlines()
                 if ln.strip().startswith("- ") and not ln.strip().startswith("- -")]
    got = {_name(r): r.replace(" ", "") for r in env_lines if re.match(r"^[A-Za-z]", r)}
    for conda_only in ("python", "pip", "cxx-compiler"):
        got.pop(conda_only, None)
    assert got.pop("torch") == "torch==2.13.0"
    wanted.pop("torch")
    for name, spec in wanted.items():
        assert got.get(name) == spec, f"environment.yml has {got.get(name)!r}, pyproject.toml {spec!r}"


def test_every_dependency_pins_a_major_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for e in project["optional-dependencies"].values() for r in e]
    for r in reqs:
        assert "<" in r or "==" in r, f"{r} has no upper bound"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    i = next(k for k, ln in enumerate(lines) if "<!-- ci:test-command -->" in ln)
    assert lines[i + 1].startswith("```")
    cmd = lines[i + 2].strip()
    assert "pytest" in cmd
    assert "ci:test-command" in (ROOT / ".ci" / "run").read_text()


def test_ci_installs_torch_like_the_readme_quickstart():
    """The Quickstart's torch step (CPU index, fallback to the default index) is what CI runs."""
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quickstart"):]
    line = next(ln for ln in quick.splitlines() if "pip install torch" in ln)
    step = re.search(r"\{ (pip install torch.*?); \}", line).group(1)
    ci = next(ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
              if "install" in ln and "torch==" in ln and not ln.lstrip().startswith("#"))
    assert ci.replace("python -m pip install -q", "pip install") == step
    assert "--index-url https://download.pytorch.org/whl/cpu" in step and step.endswith("|| pip install torch==2.13.0")
