"""Python client of the otavatar gRPC service (proto/avatar/v1/avatar.proto).

    from otavatar.client import AvatarClient
    with AvatarClient("127.0.0.1:50051", token="...") as client:
        avatar_id = client.create_avatar(open("me.jpg", "rb").read())
        for frame in client.stream(avatar_id, coefficient_rows):       # uint8 [H,W,3] per frame
            ...

Errors surface as grpc.RpcError with the codes of reliability.md section 2 (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAUTHENTICATED, UNAVAILABLE, DEADLINE_EXCEEDED, ...). Needs the
`serve` extra (grpcio, protobuf).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from numpy.typing import NDArray

from otavatar import _grpcenv  # noqa: F401  (before grpc is imported: see there)

__all__ = ["AvatarClient", "ClientTLS", "AvatarInfo", "StreamFrame", "AvatarCreationError"]

# 512x512 RGBA frames are 1 MiB and avatar files / portraits up to 10 MB: above gRPC's 4 MiB default
_MAX_MESSAGE = 16 * 2**20
_ENCODINGS = ("RAW_RGB8", "RAW_RGBA8", "JPEG", "PNG")
_WINDOWS = ("centered", "causal")
_CAMERAS = ("portrait", "driver", "per_frame")
_DELIVERIES = ("all", "latest")


class AvatarCreationError(RuntimeError):
    """CreateAvatar ended FAILED (the message carries the server's reason)."""

    def __init__(self, avatar_id: str, reason: str) -> None:
        super().__init__(f"avatar {avatar_id} failed: {reason}")
        self.avatar_id, self.reason = avatar_id, reason


@dataclass(frozen=True)
class ClientTLS:
    """TLS for the channel: ca_cert (PEM of the server's CA; None = system roots), and for mutual TLS the
    client's certificate and key. server_name overrides the name checked against the certificate."""

    ca_cert: str | os.PathLike[str] | bytes | None = None
    client_cert: str | os.PathLike[str] | bytes | None = None
    client_key: str | os.PathLike[str] | bytes | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class AvatarInfo:
    avatar_id: str
    state: str                  # PENDING / READY / FAILED
    reason: str
    name: str
    created: float
    updated: float
    step: int
    total_steps: int
    model_fingerprint: str


@dataclass(frozen=True)
class StreamFrame:
    index: int                              # the frame index sent
    image: NDArray[np.uint8]                # [H,W,3] ([H,W,4] for RAW_RGBA8)
    timings: dict[str, float]               # queue_ms, render_ms, encode_ms, total_ms, batch_size
    dropped: int                            # frames of this stream dropped so far (delivery="latest")


def _pem(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class AvatarClient:
    """target: "host:port". token: the bearer token (sent as `authorization` metadata). tls: None (plaintext),
    True (system roots) or a ClientTLS."""

    def __init__(self, target: str, *, token: str | None = None, tls: ClientTLS | bool | None = None,
                 options: Iterable[tuple[str, Any]] = ()) -> None:
        import grpc

        from otavatar.server._proto import avatar_pb2, avatar_pb2_grpc

        self._pb = avatar_pb2
        opts = [("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE),
                *options]
        if tls:
            cfg = tls if isinstance(tls, ClientTLS) else ClientTLS()
            creds = grpc.ssl_channel_credentials(_pem(cfg.ca_cert), _pem(cfg.client_key), _pem(cfg.client_cert))
            if cfg.server_name:
                opts.append(("grpc.ssl_target_name_override", cfg.server_name))
            self.channel = grpc.secure_channel(target, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(target, options=opts)
        self._stub = avatar_pb2_grpc.AvatarServiceStub(self.channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "AvatarClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- avatars ---------------------------------------------------------------------------------------------
    def create_avatar(self, image_bytes: bytes, coeffs: Any = None, camera: Any = None, aligned: bool = False, *,
                      name: str = "", wait: bool = True, progress: Callable[[int, int, float], Any] | None = None,
                      timeout: float | None = None) -> str:
        """Portrait bytes (JPEG/PNG/WebP/BMP) -> avatar id. wait: follow the job until READY (raise
        AvatarCreationError if it FAILED); else return the id at once (state PENDING; poll get_avatar).
        progress(step, total, loss) is called as inversion steps complete."""
        request = self._pb.CreateAvatarRequest(
            image=bytes(image_bytes), aligned=bool(aligned), name=name,
            coeffs=[] if coeffs is None else np.asarray(coeffs, np.float32).ravel().tolist(),
            camera=[] if camera is None else np.asarray(camera, np.float32).ravel().tolist())
        call = self._stub.CreateAvatar(request, metadata=self._metadata, timeout=timeout)
        avatar_id = None
        for message in call:
            avatar_id = message.avatar_id
            if progress is not None and message.total_steps:
                progress(message.step, message.total_steps, message.loss)
            if not wait:
                call.cancel()     # the job keeps running on the server
                return avatar_id
            if message.state == self._pb.FAILED:
                raise AvatarCreationError(avatar_id, message.reason)
            if message.state == self._pb.READY:
                return avatar_id
        raise AvatarCreationError(avatar_id or "?", "the server ended the progress stream early")

    def _info(self, m: Any) -> AvatarInfo:
        return AvatarInfo(m.avatar_id, self._pb.AvatarState.Name(m.state), m.reason, m.name, m.created_unix,
                          m.updated_unix, m.step, m.total_steps, m.model_fingerprint)

    def get_avatar(self, avatar_id: str, *, timeout: float | None = None) -> AvatarInfo:
        return self._info(self._stub.GetAvatar(self._pb.GetAvatarRequest(avatar_id=avatar_id),
                                               metadata=self._metadata, timeout=timeout))

    def list_avatars(self, *, timeout: float | None = None) -> list[AvatarInfo]:
        reply = self._stub.ListAvatars(self._pb.ListAvatarsRequest(), metadata=self._metadata, timeout=timeout)
        return [self._info(m) for m in reply.avatars]

    def delete_avatar(self, avatar_id: str, *, timeout: float | None = None) -> None:
        self._stub.DeleteAvatar(self._pb.DeleteAvatarRequest(avatar_id=avatar_id), metadata=self._metadata,
                                timeout=timeout)

    def import_avatar(self, avatar_file: bytes | str | os.PathLike[str], *, name: str = "",
                      timeout: float | None = None) -> str:
        """An otavatar avatar file (bytes or a path; otavatar.Avatar.save) -> avatar id (READY)."""
        data = avatar_file if isinstance(avatar_file, (bytes, bytearray)) else Path(avatar_file).read_bytes()
        reply = self._stub.ImportAvatar(self._pb.ImportAvatarRequest(avatar_file=bytes(data), name=name),
                                        metadata=self._metadata, timeout=timeout)
        return reply.avatar_id

    def export_avatar(self, avatar_id: str, *, timeout: float | None = None) -> bytes:
        return self._stub.ExportAvatar(self._pb.ExportAvatarRequest(avatar_id=avatar_id), metadata=self._metadata,
                                       timeout=timeout).avatar_file

    def server_info(self, *, timeout: float | None = None) -> Any:
        """The ServerInfo message (model, coefficient layout, encodings, limits, counters)."""
        return self._stub.GetServerInfo(self._pb.GetServerInfoRequest(), metadata=self._metadata, timeout=timeout)

    def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """grpc.health.v1 status name: SERVING, NOT_SERVING, ... (no token needed)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    # -- streaming -------------------------------------------------------------------------------------------
    def _requests(self, header: Any, frames: Iterable[Any], failure: list) -> Iterator[Any]:
        pb = self._pb
        yield pb.RenderRequest(header=header)
        try:
            for i, item in enumerate(frames):
                coeffs, camera = item if isinstance(item, tuple) else (item, None)
                frame = pb.CoefficientFrame(index=i, coeffs=np.asarray(coeffs, np.float32).ravel().tolist())
                if camera is not None:
                    frame.camera.extend(np.asarray(camera, np.float32).ravel().tolist())
                yield pb.RenderRequest(frame=frame)
        except Exception as e:     # a bad frames iterable: report it, do not hang the call
            failure.append(e)
            return
        yield pb.RenderRequest(end=pb.EndOfStream())

    def stream_frames(self, avatar_id: str, frames: Iterable[Any], encoding: str = "RAW_RGB8", *,
                      window: str = "centered", camera: str = "portrait", size: int = 0, delivery: str = "all",
                      queue_depth: int = 0, timeout: float | None = None) -> Iterator[StreamFrame]:
        """Like `stream`, yielding StreamFrame (index, image, timings, dropped)."""
        pb = self._pb
        for name, value, valid in (("encoding", encoding, _ENCODINGS), ("window", window, _WINDOWS),
                                   ("camera", camera, _CAMERAS), ("delivery", delivery, _DELIVERIES)):
            if value not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}, got {value!r}")
        header = pb.StreamHeader(avatar_id=avatar_id, output_size=size, encoding=pb.Encoding.Value(encoding),
                                 window_mode=pb.WindowMode.Value(window.upper()),
                                 camera_mode=pb.CameraMode.Value(camera.upper()),
                                 delivery=pb.Delivery.Value(delivery.upper()), queue_depth=queue_depth)
        from otavatar.server.codecs import decode_frame

        failure: list = []
        call = self._stub.RenderStream(self._requests(header, frames, failure), metadata=self._metadata,
                                       timeout=timeout)
        try:
            for reply in call:
                image = decode_frame(reply.data, reply.encoding, reply.width, reply.height)
                t = reply.timings
                yield StreamFrame(reply.index, image, {"queue_ms": t.queue_ms, "render_ms": t.render_ms,
                                                       "encode_ms": t.encode_ms, "total_ms": t.total_ms,
                                                       "batch_size": t.batch_size}, reply.dropped)
        finally:
            call.cancel()      # no-op after a normal end; frees the server's stream when the caller stops early
        if failure:
            raise failure[0]

    def stream(self, avatar_id: str, frames: Iterable[Any], encoding: str = "RAW_RGB8", **kwargs: Any
               ) -> Iterator[NDArray[np.uint8]]:
        """Drive an avatar: `frames` yields 70-float coefficient vectors, or (coeffs, camera[25]) tuples (use
        camera="per_frame"). Yields uint8 [H,W,3] frames ([H,W,4] for RAW_RGBA8) in order. Keyword options:
        window ("centered": 13 frames of look-ahead, or "causal"), camera ("portrait", "driver", "per_frame"),
        size (square output; 0 = native), delivery ("all", or "latest": drop stale frames), queue_depth,
        timeout (seconds: the call's deadline)."""
        for frame in self.stream_frames(avatar_id, frames, encoding, **kwargs):
            yield frame.image
