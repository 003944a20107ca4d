"""Shared fixtures: where the reference data lives, and skipping cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (a clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def vidur_dir(shared_data: Path) -> Path:
    path = shared_data / "kernel-profiles" / "vidur"
    if not path.is_dir():
        pytest.skip(f"vidur profiles not found at {path}")
    return path


# Property, fuzz and mutation tests: derandomized, so every run (CI's included) tries the same
# examples, each test setting its own bounded count; no per-example deadline, as two loaded
# cores make timings noisy.
# SCHEDGYM_FUZZ_SCALE (see tests/playing.py) asks for fresh random examples instead.
settings.register_profile(
    "schedgym",
    derandomize="SCHEDGYM_FUZZ_SCALE" not in os.environ,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("schedgym")


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A local Ray instance of 2 CPUs for the session, shut down after it. Its workers import
    ``tests/ray_helpers.py`` by name and read the kill marker and the starts log from the
    environment variables named there."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'schedgym[ray]'")
    import ray_helpers

    scratch = tmp_path_factory.mktemp("ray")
    env = {
        "PYTHONPATH": str(Path(__file__).resolve().parent),
        ray_helpers.KILL_MARKER: str(scratch / "kill-marker"),
        ray_helpers.STARTS_LOG: str(scratch / "starts.log"),
    }
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
    )
    yield {k: Path(v) for k, v in env.items() if k != "PYTHONPATH"}
    ray.shutdown()
