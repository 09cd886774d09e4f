"""`import otavatar.media` (and decoding, alignment, pose, GIF/PNG writing) stay free of torch and onnxruntime."""
from __future__ import annotations

import subprocess
import sys


def test_media_import_is_light():
    code = (
        "import sys, numpy as np\n"
        "import otavatar.media as m\n"
        "assert 'otavatar.media.face' not in sys.modules\n"
        "img = m.decode_image(np.zeros((64, 64, 3), np.uint8))\n"
        "lm = np.array([[20., 20], [40, 20], [30, 30], [22, 40], [38, 40]])\n"
        "m.align_portrait(img, lm, size=32); m.estimate_pose(lm, 64); m.contact_sheet(img[None])\n"
        "m.detect_faces  # resolving the name loads the module, not the session\n"
        "heavy = sorted(n for n in ('torch', 'onnxruntime', 'cv2', 'retinaface', 'imageio_ffmpeg') if n in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
