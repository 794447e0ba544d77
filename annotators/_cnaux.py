"""Import controlnet_aux pieces quietly.

`import controlnet_aux.<anything>` runs controlnet_aux/__init__, which imports every detector
(timm, mediapipe probes...) and prints deprecation/"mediapipe not installed" warnings that mean
nothing to studio users. We import once, on first use, with those warnings silenced.
"""

from __future__ import annotations

import warnings
from types import ModuleType


def cnaux(module: str) -> ModuleType:
    """`controlnet_aux.<module>`, imported with its import-time warnings silenced."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"controlnet_aux.{module}")
