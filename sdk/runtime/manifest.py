"""The exported model folder's manifest (`manifest.json`): shared by the exporter and the Engine.

numpy/stdlib only: the torch-free runtime reads it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT = "otavatar-onnx"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# metadata_props keys written into every graph (values are strings)
META_PREFIX = "otavatar."


class ManifestError(ValueError):
    """A model folder whose manifest, hashes or graph metadata do not match."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(model_dir: str | Path, *, check_hashes: bool = True) -> dict[str, Any]:
    """Load `model_dir/manifest.json`, check its format and (by default) the sha256 of every file it lists."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{model_dir}: no {MANIFEST}; export a model folder with `otavatar export`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                            f"expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: format version {manifest.get('format_version')!r}, but this otavatar reads "
                            f"version {FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ManifestError(f"{path}: lists no files")
    if check_hashes:
        for name, want in files.items():
            file = model_dir / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ManifestError(f"{path}: file entry {name!r} points outside the model folder")
            if not file.is_file():
                raise ManifestError(f"{model_dir}: {name} is listed in the manifest but missing")
            got = sha256_file(file)
            if got != want:
                raise ManifestError(f"{file}: sha256 {got[:16]}... does not match the manifest ({want[:16]}...); "
                                    "the file was modified or corrupted -- re-export the folder")
    return manifest
