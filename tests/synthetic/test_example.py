"""The SynthHeads example writes its contact sheet and large frame."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "synthheads_sheet.py"


def test_example_writes_sheet_and_frame(tmp_path):
    spec = importlib.util.spec_from_file_location("synthheads_sheet", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sheet, frame = module.main(tmp_path, resolution=32, big=96)    # small sizes: the default is 128 and 512
    assert Image.open(sheet).size == (4 * 32, 4 * 32)
    assert Image.open(frame).size == (96, 96)
