"""Running a script's ``main(argv)`` in the test process (no subprocess: each one costs ~2 s of torch import)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """The script ROOT/<name>.py as a module (affordance.py is shadowed by the affordance package)."""
    key = f"_script_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / f"{name}.py")
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def run_script(name: str, argv: list[str], capsys) -> tuple[int, str, str]:  # noqa: ANN001 - pytest's capsys
    """A script's main(argv) in-process: (exit code, stdout, stderr)."""
    mod = load_script(name)
    capsys.readouterr()
    try:
        code = mod.main(argv) or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    out, err = capsys.readouterr()
    return code, out, err
