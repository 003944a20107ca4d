"""A plain (non-editable) `pip install .` gives a working package and `schedgym` command."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_plain_install_ships_every_subpackage_and_table(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("schedgym-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # every folder of the source tree that is a package must be in the wheel
    skip = {"tests", ".venv", "build"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.relative_to(ROOT)
        if rel.parts[0] in skip or any(p.startswith(".") for p in rel.parts):
            continue
        assert f"schedgym/{rel.as_posix()}" in names, f"{rel} missing from the wheel"
    for table in (ROOT / "envs" / "hardware" / "tables").glob("*.json"):
        assert f"schedgym/envs/hardware/tables/{table.name}" in names

    # install the wheel alone into a fresh venv that borrows the dependencies via a .pth file
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    site = next((env / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [env / "bin" / "pip", "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run(
        [env / "bin" / "schedgym", "list", "hardware"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "h100" in out.stdout and "cpu" in out.stdout
