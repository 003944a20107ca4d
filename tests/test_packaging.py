"""A plain (non-editable) `pip install .` gives a working package and `schedgym` command."""

from __future__ import annotations

import json
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


def _metadata_only_wheel(where: Path, name: str, version: str) -> Path:
    """A wheel of ``name==version`` holding only its metadata: a stand-in for a user's own build
    of a heavy package (their torch), which pip's resolver sees exactly as the real one."""
    tag = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{tag}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{tag}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = f"{tag}.dist-info/RECORD"
    files[record] = "".join(f"{f},,\n" for f in [*files, record])
    path = where / f"{tag}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for arcname, text in files.items():
            whl.writestr(arcname, text)
    return path


def test_install_keeps_the_torch_a_user_already_has(tmp_path):
    # A user's environment with another torch (here 2.9.0, not the 2.13.0 `make` installs):
    # pip, resolving schedgym's declared dependencies, must keep it rather than replace it.
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    pip = [str(env / "bin" / "python"), "-m", "pip"]
    theirs = _metadata_only_wheel(tmp_path, "torch", "2.9.0")
    subprocess.run([*pip, "install", "-q", "--no-deps", str(theirs)], check=True, timeout=300)
    report = tmp_path / "report.json"
    out = subprocess.run(
        [*pip, "install", "--dry-run", "--quiet", "--report", str(report), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    planned = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "schedgym" in planned and "stable-baselines3" in planned
    assert "torch" not in planned, f"pip would replace the user's torch with {planned['torch']}"
