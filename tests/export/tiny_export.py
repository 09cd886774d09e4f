"""One tiny-preset export shared by tests/export and tests/runtime (and by both xdist workers: the first
worker to ask exports under a file lock, the other reuses the folder). Export + verify takes ~40 s on 2 CPUs."""
from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SEED = 0


@dataclass
class TinyExport:
    folder: Path
    report: dict[str, Any]   # ExportReport fields that matter to the tests (JSON round trip)

    def models(self):
        """The exported models, rebuilt from the same seed (cheap; deterministic init)."""
        from otavatar.export import models_for_export

        generator, controller, _ = models_for_export(preset="tiny", seed=SEED)
        return generator, controller


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, request) -> TinyExport:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    base = tmp_path_factory.getbasetemp()
    root = base.parent if hasattr(request.config, "workerinput") else base  # shared by the workers of one run
    folder, summary = root / "tiny_onnx", root / "tiny_onnx_report.json"
    with open(root / "tiny_onnx.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not summary.is_file():
            from otavatar.export import export_models, models_for_export

            generator, controller, source = models_for_export(preset="tiny", seed=SEED)
            report = export_models(folder, generator, controller, verify=True, source=source, seed=SEED)
            summary.write_text(json.dumps({"verify": report.verify, "files": report.files,
                                           "exporter": report.exporter, "opset": report.opset,
                                           "simplifier": report.simplifier, "summary": report.summary()}))
    return TinyExport(folder=folder, report=json.loads(summary.read_text()))
