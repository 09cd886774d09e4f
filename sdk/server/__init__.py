"""The gRPC service (proto/avatar/v1/avatar.proto): avatar store, render loop, inversion pool, auth, drain.

    from otavatar.server import Server, ServerConfig
    server = Server(ServerConfig(models="out/onnx", data="var/avatars", port=0)).start()

or `otavatar serve --models DIR --data DIR`. Needs the `serve` extra (grpcio, protobuf, grpcio-health-checking)
and onnxruntime; CreateAvatar also needs torch (the `train` extra). Importing this package loads nothing heavy.
"""
from __future__ import annotations

from typing import Any

from otavatar import _grpcenv  # noqa: F401  (before grpc is imported: see there)

__all__ = ["Server", "ServerConfig", "run"]


def __getattr__(name: str) -> Any:
    if name == "ServerConfig":
        from .config import ServerConfig

        return ServerConfig
    if name in ("Server", "run"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
