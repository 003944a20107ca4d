"""The exceptions every room of schedgym raises, so callers can catch them by meaning.

Each carries a one-line message that names what was wrong and where; the CLI prints that line
instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SchedgymError(Exception):
    """Base class of the errors the CLI reports as one line."""


class WorkloadError(SchedgymError, ValueError):
    """A workload file (instance, trace, buffer set) or object is malformed.

    The message reads ``FILE:LINE: REASON`` (or ``FILE: REASON`` when no line applies), so an
    editor can jump to the fault.
    """

    def __init__(self, reason: str, path: str | Path | None = None, line: int | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        where = self.path or "<workload>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {reason}")


class CostTableError(SchedgymError, ValueError):
    """A kernel cost table or hardware profile is malformed or cannot price a request."""


class IllegalActionError(SchedgymError, ValueError):
    """An environment was given an action that its mask forbids; the message says which and why."""


class RecordError(SchedgymError, ValueError):
    """An episode record fails independent validation (precedence, capacity, overlap, ...)."""
