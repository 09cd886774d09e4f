"""Interop: the Node.js example (examples/node, @grpc/grpc-js + @grpc/proto-loader) creates an avatar and
streams 30 frames from a live server on loopback."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import REPO, TOKEN_A

NODE_DIR = REPO / "examples" / "node"
_NETWORK = ("ENOTFOUND", "ETIMEDOUT", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "network")


@pytest.fixture(scope="module")
def node_client():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            if any(word in done.stderr for word in _NETWORK):
                pytest.skip(f"npm install could not reach the registry: {done.stderr[-300:]}")
            raise AssertionError(f"npm install failed: {done.stderr[-2000:]}")
    return NODE_DIR / "client.js"


def test_node_client_creates_an_avatar_and_streams_30_frames(server, client, portrait, node_client, tmp_path):
    image, _ = portrait
    (tmp_path / "portrait.png").write_bytes(image)
    done = subprocess.run(["node", str(node_client), "--target", f"127.0.0.1:{server.port}", "--token", TOKEN_A,
                           "--image", str(tmp_path / "portrait.png"), "--aligned", "--frames", "30"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 30 and summary["indices"] == list(range(30))
    assert (summary["width"], summary["height"], summary["bytes"]) == (128, 128, 30 * 128 * 128 * 4)   # RGBA
    assert client.get_avatar(summary["avatar_id"]).state == "READY"
    assert "inversion 2/2" in done.stderr                       # progress was observed


def test_node_client_reports_grpc_errors(server, node_client, tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    done = subprocess.run(["node", str(node_client), "--target", f"127.0.0.1:{server.port}", "--token", "w" * 32,
                           "--image", str(tmp_path / "x.png"), "--aligned"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "UNAUTHENTICATED" in done.stderr
