"""Loading a recipe from ``scripts/`` (not a package) in a test: ``load_script("gym_vs_vllm")``.

Imported by the tests that check a recipe's settings or reuse its constants (pytest puts
``tests/`` on ``sys.path``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module, registered under ``NAME`` in ``sys.modules`` (dataclasses
    look their module up there). Raises ``FileNotFoundError`` when there is no such script."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
