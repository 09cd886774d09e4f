"""ONNX export of the controller and the generator (see DESIGN.md sections 2, 6, 9).

Graphs always trace the torch references in `otavatar.kernels.reference`. `import otavatar.export` stays
light; torch and onnx load when `export_models` is first used.

    from otavatar.export import export_models
    report = export_models("out/onnx", generator, controller, opset=18, verify=True)
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export_models": "exporter", "ExportReport": "exporter", "ExportError": "exporter", "GRAPHS": "exporter",
    "PRECISIONS": "exporter", "DEFAULT_OPSET": "exporter", "MIN_OPSET": "exporter", "TOLERANCE": "exporter",
    "MANIFEST": "exporter", "FORMAT": "exporter", "FORMAT_VERSION": "exporter",
    "models_for_export": "exporter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
