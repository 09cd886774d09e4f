"""Reuse tests/export's shared tiny export (one export per test run, shared by the xdist workers)."""
import sys
from pathlib import Path

_EXPORT_TESTS = str(Path(__file__).resolve().parents[1] / "export")
if _EXPORT_TESTS not in sys.path:
    sys.path.insert(0, _EXPORT_TESTS)

from tiny_export import TinyExport, tiny_export  # noqa: E402,F401
