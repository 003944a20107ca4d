"""Policies that the Ray tests import by name (``ray_helpers:NAME``) in Ray's worker processes,
which find this folder through ``PYTHONPATH`` (see the ``ray_local`` fixture in conftest.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

# While this file exists, the first worker to take a decision deletes it and kills itself.
KILL_MARKER = "SCHEDGYM_TEST_KILL_MARKER"
# Every episode start is appended here, one case name a line.
STARTS_LOG = "SCHEDGYM_TEST_STARTS_LOG"


def first_legal_dies_once(env: Any, obs: Any) -> int:
    """The lowest legal action (deterministic); the first call that finds the kill marker
    removes it and SIGKILLs its own process, as a node's OOM killer or a lost node would."""
    marker = os.environ.get(KILL_MARKER)
    if marker:
        try:
            os.remove(marker)
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return int(np.flatnonzero(env.unwrapped.action_masks())[0])


def _log_start(env: Any) -> None:
    log = os.environ.get(STARTS_LOG)
    if log:
        with Path(log).open("a") as f:
            f.write(f"{env.unwrapped.instance.name}\n")


first_legal_dies_once.reset = _log_start
