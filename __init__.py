"""schedgym: Gymnasium environments for scheduling accelerator work, priced by measured kernels.

``import schedgym`` registers ``schedgym/<Name>-v0`` with Gymnasium; see DESIGN.md for the map.
"""

from schedgym._version import __version__
from schedgym.registry import register_envs

register_envs()

__all__ = ["__version__", "register_envs"]
