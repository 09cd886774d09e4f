"""The AvatarService RPCs (proto/avatar/v1/avatar.proto) with reliability.md section 2's status codes."""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator

import grpc
import numpy as np

from ._proto import avatar_pb2 as pb
from ._proto import avatar_pb2_grpc as pb_grpc
from . import config as C
from .auth import AuthError, TokenTable
from .codecs import ENCODINGS, encode_frame
from .jobs import InversionPool, PoolFull, Unavailable
from .scheduler import FrameJob, RenderScheduler, Stats, StreamClosed, StreamState
from .store import FAILED, PENDING, READY, AvatarRecord, AvatarStore, validate_id

__all__ = ["AvatarServicer"]

SERVICE_NAME = "avatar.v1.AvatarService"
_STATES = {PENDING: pb.PENDING, READY: pb.READY, FAILED: pb.FAILED}
_RETRY_AFTER = (("retry-after-ms", "1000"),)
_LATENT_CACHE = 64          # avatars kept decoded in memory (an official latent is 28 KB)


@dataclass(eq=False)
class _Session:
    """What the reader thread of one RenderStream shares with its response loop (guarded by scheduler.cond)."""

    last_message: float = field(default_factory=time.monotonic)
    stream: StreamState | None = None
    ended: bool = False                  # end marker (or half-close) seen and flushed
    error: tuple[grpc.StatusCode, str] | None = None
    encoding: int = pb.RAW_RGB8
    size: int = 0
    quality: int = 90


class AvatarServicer(pb_grpc.AvatarServiceServicer):
    """unavailable: why the server is not ready; every RPC then answers UNAVAILABLE with it. Set at start when the
    model did not load (reliability.md F8: engine, scheduler and pool are then None, never reached past `_enter`),
    or later by the Server when the render loop gives the engine up (F7 b)."""

    def __init__(self, *, config: C.ServerConfig, store: AvatarStore, engine: Any, scheduler: RenderScheduler | None,
                 pool: InversionPool | None, tokens: TokenTable, stats: Stats, unavailable: str | None = None) -> None:
        self.config, self.store, self.engine, self.scheduler = config, store, engine, scheduler
        self.pool, self.tokens, self.stats = pool, tokens, stats
        self.unavailable = unavailable
        manifest = engine.manifest if engine is not None else {}
        self.fingerprint = manifest.get("model_fingerprint", "")
        self.window = int(manifest.get("coefficient_layout", {}).get("window", 27))
        self.draining = False
        self._lock = threading.Lock()
        self._latents: OrderedDict[str, Any] = OrderedDict()

    # -- common checks ---------------------------------------------------------------------------------------
    def _enter(self, context: grpc.ServicerContext) -> str:
        """Every RPC's first call: UNAVAILABLE while draining, UNAUTHENTICATED without a valid token, UNAVAILABLE
        when not ready (after the token check: the reason names server paths, for authenticated callers only),
        else the caller's tenant."""
        if self.draining:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another instance")
        try:
            tenant = self.tokens.tenant(context.invocation_metadata())
        except AuthError as e:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        if self.unavailable is not None:
            context.abort(grpc.StatusCode.UNAVAILABLE, self.unavailable)
        return tenant

    @staticmethod
    def _id(context: grpc.ServicerContext, raw: str) -> str:
        try:
            return validate_id(raw)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    def _record(self, context: grpc.ServicerContext, tenant: str, raw: str) -> AvatarRecord:
        avatar_id = self._id(context, raw)
        record = self.store.get(tenant, avatar_id)
        if record is None:   # unknown and another tenant's id answer the same (no existence oracle)
            context.abort(grpc.StatusCode.NOT_FOUND, f"avatar {avatar_id} not found")
        return record

    def _ready(self, context: grpc.ServicerContext, record: AvatarRecord) -> AvatarRecord:
        if record.state != READY:
            detail = f": {record.reason}" if record.reason else ""
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"avatar {record.id} is {record.state}{detail}")
        return record

    def _info(self, record: AvatarRecord) -> pb.AvatarInfo:
        job = self.pool.job(record.id) if record.state == PENDING else None
        return pb.AvatarInfo(avatar_id=record.id, state=_STATES[record.state], reason=record.reason,
                             name=record.name, created_unix=record.created, updated_unix=record.updated,
                             step=job.step if job else 0, total_steps=job.total if job else 0,
                             model_fingerprint=record.fingerprint)

    # -- avatars ---------------------------------------------------------------------------------------------
    def CreateAvatar(self, request: pb.CreateAvatarRequest, context: grpc.ServicerContext) -> Iterator:
        tenant = self._enter(context)
        if len(request.image) > C.MAX_IMAGE_BYTES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"image is {len(request.image):,} bytes; the limit is "
                                                            f"{C.MAX_IMAGE_BYTES:,}")
        if len(request.name) > 128:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"name is {len(request.name)} characters; at most 128")
        if not self.pool.available(wait=120):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"avatar creation is not available on this server: "
                                                               f"{self.pool._error}")
        try:
            portrait = self._prepare(request)
        except ValueError as e:    # otavatar.media.MediaError is a ValueError: bad bytes, too big, no face, ...
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except ImportError as e:   # the face detector's weights package is missing: aligned portraits still work
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{e} (or send an aligned portrait: aligned=true)")
        try:
            job = self.pool.submit(tenant, portrait, request.name)
        except PoolFull as e:
            self._reject(context, str(e))
        except Unavailable as e:
            code = grpc.StatusCode.UNAVAILABLE if self.draining else grpc.StatusCode.FAILED_PRECONDITION
            context.abort(code, str(e))
        seen = None
        while True:     # progress until READY / FAILED; the job goes on if the client leaves
            with job.changed:
                now = (job.state, job.step)
                if now == seen and not job.done.is_set():
                    job.changed.wait(timeout=0.5)
                    now = (job.state, job.step)
                message = pb.CreateAvatarProgress(avatar_id=job.avatar_id, state=_STATES[job.state], step=job.step,
                                                  total_steps=job.total, reason=job.reason,
                                                  loss=job.loss if np.isfinite(job.loss) else 0.0)
                finished = job.done.is_set()
            if now != seen or finished:
                seen = now
                yield message
            if finished or not context.is_active():
                return

    def _prepare(self, request: pb.CreateAvatarRequest) -> Any:
        from otavatar.avatar import prepare_portrait
        from otavatar.media import decode_image

        pixels = decode_image(bytes(request.image), max_bytes=C.MAX_IMAGE_BYTES, max_pixels=C.MAX_IMAGE_PIXELS)
        coeffs = np.asarray(request.coeffs, np.float32) if len(request.coeffs) else None
        camera = np.asarray(request.camera, np.float32) if len(request.camera) else None
        return prepare_portrait(pixels, coeffs=coeffs, camera=camera, aligned=request.aligned)

    def GetAvatar(self, request: pb.GetAvatarRequest, context: grpc.ServicerContext) -> pb.AvatarInfo:
        tenant = self._enter(context)
        return self._info(self._record(context, tenant, request.avatar_id))

    def ListAvatars(self, request: pb.ListAvatarsRequest, context: grpc.ServicerContext) -> pb.ListAvatarsResponse:
        tenant = self._enter(context)
        return pb.ListAvatarsResponse(avatars=[self._info(r) for r in self.store.list(tenant)])

    def DeleteAvatar(self, request: pb.DeleteAvatarRequest, context: grpc.ServicerContext) -> pb.DeleteAvatarResponse:
        tenant = self._enter(context)
        record = self._record(context, tenant, request.avatar_id)
        if not self.store.delete(tenant, record.id):
            context.abort(grpc.StatusCode.NOT_FOUND, f"avatar {record.id} not found")
        with self._lock:
            self._latents.pop(record.id, None)
        return pb.DeleteAvatarResponse()

    def ImportAvatar(self, request: pb.ImportAvatarRequest, context: grpc.ServicerContext) -> pb.AvatarInfo:
        tenant = self._enter(context)
        data = bytes(request.avatar_file)
        if len(data) > C.MAX_AVATAR_FILE_BYTES:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"avatar_file is {len(data):,} bytes; the limit is "
                                                              f"{C.MAX_AVATAR_FILE_BYTES:,}")
        if len(request.name) > 128:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"name is {len(request.name)} characters; at most 128")
        from otavatar.runtime import AvatarLatent

        import secrets

        scratch = self.store.scratch / f"import-{secrets.token_hex(8)}.avatar"
        try:
            scratch.write_bytes(data)
            latent = AvatarLatent.load(scratch)         # safetensors only: nothing in the file is executed
            self.engine.check_avatar(latent)
        except ValueError as e:                         # AvatarFileError is a ValueError
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e).replace(str(scratch), "avatar_file"))
        finally:
            scratch.unlink(missing_ok=True)
        return self._info(self.store.import_ready(tenant, data, self.fingerprint, request.name))

    def ExportAvatar(self, request: pb.ExportAvatarRequest, context: grpc.ServicerContext) -> pb.ExportAvatarResponse:
        tenant = self._enter(context)
        record = self._ready(context, self._record(context, tenant, request.avatar_id))
        try:
            return pb.ExportAvatarResponse(avatar_file=self.store.read_blob(record))
        except (OSError, ValueError) as e:
            context.abort(grpc.StatusCode.DATA_LOSS, f"avatar {record.id}: {e}")

    def GetServerInfo(self, request: pb.GetServerInfoRequest, context: grpc.ServicerContext) -> pb.ServerInfo:
        self._enter(context)
        import otavatar

        cfg = self.config
        limits = pb.ServerLimits(max_streams=cfg.max_streams, max_jobs=cfg.max_jobs, max_image_bytes=C.MAX_IMAGE_BYTES,
                                 max_image_pixels=C.MAX_IMAGE_PIXELS,
                                 max_receive_message_bytes=C.MAX_RECEIVE_MESSAGE_BYTES,
                                 max_send_message_bytes=C.MAX_SEND_MESSAGE_BYTES, max_queue_depth=C.MAX_QUEUE_DEPTH,
                                 idle_timeout_ms=int(cfg.idle_timeout_s * 1000), max_output_size=C.MAX_OUTPUT_SIZE,
                                 max_abs_coefficient=C.MAX_ABS_COEFFICIENT)
        with self.scheduler.cond:
            stats = pb.ServerStats(**vars(self.stats))
        return pb.ServerInfo(version=otavatar.__version__, model_fingerprint=self.fingerprint,
                             resolution=int(self.engine.generator_config["img_resolution"]),
                             coefficients_per_frame=int(self.engine.controller_config["coeff_dim"]),
                             coefficient_layout=json.dumps(self.engine.manifest.get("coefficient_layout", {}),
                                                           sort_keys=True),
                             window=self.window, encodings=list(ENCODINGS), limits=limits,
                             providers=list(self.engine.providers), can_create=self.pool.available(wait=0),
                             stats=stats)

    def _reject(self, context: grpc.ServicerContext, message: str) -> None:
        context.set_trailing_metadata(_RETRY_AFTER)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    # -- RenderStream ----------------------------------------------------------------------------------------
    def _latent(self, record: AvatarRecord) -> Any:
        with self._lock:
            if record.id in self._latents:
                self._latents.move_to_end(record.id)
                return self._latents[record.id]
        from otavatar.runtime import AvatarLatent

        self.store.read_blob(record)                   # sha256 check: the file on disk is the one committed
        latent = AvatarLatent.load(self.store.blob_path(record.id))
        self.engine.check_avatar(latent)
        with self._lock:
            self._latents[record.id] = latent
            while len(self._latents) > _LATENT_CACHE:
                self._latents.popitem(last=False)
        return latent

    def RenderStream(self, request_iterator: Iterator, context: grpc.ServicerContext) -> Iterator:
        tenant = self._enter(context)
        cond = self.scheduler.cond
        with cond:
            admitted = self.stats.streams_active < self.config.max_streams
            if admitted:
                self.stats.streams_active += 1
                self.stats.streams_opened += 1
            else:
                self.stats.streams_rejected += 1
        if not admitted:     # at once, never queued (reliability.md L3)
            self._reject(context, f"{self.config.max_streams} render streams are active (the limit); retry later")
        session = _Session()

        def wake() -> None:
            with cond:
                cond.notify_all()

        context.add_callback(wake)   # cancel / deadline / disconnect: the loop below notices at once
        reader = threading.Thread(target=self._read, args=(request_iterator, session, tenant),
                                  name="otavatar-stream-reader", daemon=True)
        reader.start()
        try:
            while True:
                with cond:
                    frame = None
                    while True:
                        stream = session.stream
                        if session.error is not None or (stream is not None and stream.error is not None):
                            break
                        if not context.is_active() or self.draining:
                            break
                        if stream is not None and stream.out:
                            frame = stream.out.popleft()
                            break
                        if session.ended and (stream is None or self.scheduler.idle(stream)):
                            break
                        if time.monotonic() - session.last_message > self.config.idle_timeout_s and not session.ended:
                            session.error = (grpc.StatusCode.ABORTED, f"no message for {self.config.idle_timeout_s:g} "
                                                                      "s: the stream is idle")
                            break
                        cond.wait(timeout=0.25)
                    error = session.error or (stream.error if stream is not None else None)
                    dropped = stream.dropped if stream is not None else 0
                if frame is not None:
                    start = time.perf_counter()
                    data, w, h = encode_frame(frame.frame, session.encoding, session.size, session.quality)
                    encode_ms = 1000.0 * (time.perf_counter() - start)
                    timings = pb.FrameTimings(queue_ms=frame.queue_ms, render_ms=frame.render_ms, encode_ms=encode_ms,
                                              total_ms=1000.0 * (time.perf_counter() - frame.ready),
                                              batch_size=frame.batch_size)
                    yield pb.RenderResponse(index=frame.index, width=w, height=h, encoding=session.encoding,
                                            data=data, timings=timings, dropped=dropped)
                    continue
                if error is not None:
                    code, message = error
                    context.abort(getattr(grpc.StatusCode, code) if isinstance(code, str) else code, message)
                if not context.is_active():
                    return
                if self.draining:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                return   # ended and every frame delivered: OK
        finally:
            with cond:
                session.ended = True
                stream = session.stream
            if stream is not None:
                self.scheduler.close(stream)
            with cond:
                self.stats.streams_active -= 1
                self.stats.streams_closed += 1
                cond.notify_all()

    def _fail(self, session: _Session, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        with self.scheduler.cond:
            if session.error is None:
                session.error = (code, message)
            self.scheduler.cond.notify_all()

    def _read(self, requests: Iterator, session: _Session, tenant: str) -> None:
        """The reader thread: validate each message, window the coefficients, queue windows for rendering."""
        state: dict[str, Any] = {}
        count = 0
        try:
            for request in requests:
                with self.scheduler.cond:
                    session.last_message = time.monotonic()
                    if session.error is not None or (session.stream is not None and session.stream.closed):
                        return
                kind = request.WhichOneof("kind")
                if session.ended:
                    return self._fail(session, f"a {kind or 'message'} after the end marker")
                if not state:
                    if kind != "header":
                        got = f"a frame (index {request.frame.index})" if kind == "frame" else kind or "an empty message"
                        return self._fail(session, f"the first message must be a header, got {got}")
                    problem = self._open(request.header, session, tenant, state)
                    if problem is not None:
                        return self._fail(session, *problem)
                elif kind == "header":
                    return self._fail(session, f"a second header after {count} frames: the header comes once, first")
                elif kind == "frame":
                    problem = self._push(request.frame, session, state)
                    count += 1
                    if problem is not None:
                        return self._fail(session, problem)
                elif kind == "end":
                    self._queue(session, state, state["windows"].flush())
                    with self.scheduler.cond:
                        session.ended = True
                        self.scheduler.cond.notify_all()
                else:
                    return self._fail(session, f"an empty RenderRequest after {count} frames (set header, frame or "
                                               "end)")
            # the client half-closed: without an end marker, flush as if it had sent one
            if not state:
                return self._fail(session, "the stream closed before a header")
            if not session.ended:
                self._queue(session, state, state["windows"].flush())
                with self.scheduler.cond:
                    session.ended = True
                    self.scheduler.cond.notify_all()
        except StreamClosed:
            return
        except grpc.RpcError:      # cancelled / deadline: the response loop ends the stream
            return
        except Exception as e:     # a bug must end the stream with a status, never hang it
            self._fail(session, f"internal error: {type(e).__name__}: {e}", grpc.StatusCode.INTERNAL)

    def _open(self, header: pb.StreamHeader, session: _Session, tenant: str,
              state: dict[str, Any]) -> tuple[str, grpc.StatusCode] | tuple[str] | None:
        """Validate the header; None when the stream is open, else (message[, code])."""
        from otavatar.coeffs import StreamingWindows

        try:
            avatar_id = validate_id(header.avatar_id)
        except ValueError as e:
            return (f"header: {e}",)
        record = self.store.get(tenant, avatar_id)
        if record is None:
            return f"avatar {avatar_id} not found", grpc.StatusCode.NOT_FOUND
        if record.state != READY:
            detail = f": {record.reason}" if record.reason else ""
            return f"avatar {record.id} is {record.state}{detail}", grpc.StatusCode.FAILED_PRECONDITION
        if header.encoding not in (pb.ENCODING_UNSPECIFIED, *ENCODINGS):
            return (f"header: unknown encoding {header.encoding}",)
        if header.output_size and not 16 <= header.output_size <= C.MAX_OUTPUT_SIZE:
            return (f"header: output_size must be 0 (native) or 16..{C.MAX_OUTPUT_SIZE}, got {header.output_size}",)
        if not 0 <= header.queue_depth <= C.MAX_QUEUE_DEPTH:
            return (f"header: queue_depth must be 0 (default {C.DEFAULT_QUEUE_DEPTH}) or 1..{C.MAX_QUEUE_DEPTH}, got "
                    f"{header.queue_depth}",)
        if not 0 <= header.jpeg_quality <= 100:
            return (f"header: jpeg_quality must be 0..100, got {header.jpeg_quality}",)
        modes = {pb.WINDOW_MODE_UNSPECIFIED: "centered", pb.CENTERED: "centered", pb.CAUSAL: "causal"}
        if header.window_mode not in modes:
            return (f"header: unknown window_mode {header.window_mode}",)
        if header.camera_mode not in (pb.CAMERA_MODE_UNSPECIFIED, pb.PORTRAIT, pb.DRIVER, pb.PER_FRAME):
            return (f"header: unknown camera_mode {header.camera_mode}",)
        if header.delivery not in (pb.DELIVERY_UNSPECIFIED, pb.ALL, pb.LATEST):
            return (f"header: unknown delivery {header.delivery}",)
        try:
            latent = self._latent(record)
        except (OSError, ValueError) as e:
            return f"avatar {record.id} cannot be read: {e}", grpc.StatusCode.DATA_LOSS
        stream = StreamState(avatar=latent, latest=header.delivery == pb.LATEST,
                             depth=header.queue_depth or C.DEFAULT_QUEUE_DEPTH)
        state.update(windows=StreamingWindows(self.window, modes[header.window_mode]), meta={}, pushed=0,
                     last_index=-1, camera_mode=header.camera_mode, portrait=latent.camera)
        with self.scheduler.cond:
            session.encoding = header.encoding or pb.RAW_RGB8
            session.size = header.output_size
            session.quality = header.jpeg_quality or 90
            session.stream = stream
        self.scheduler.open(stream)
        return None

    def _push(self, frame: pb.CoefficientFrame, session: _Session, state: dict[str, Any]) -> str | None:
        """Validate one frame and window it; an error message naming the frame index, or None."""
        where = f"frame {frame.index}"
        n = len(frame.coeffs)
        want = int(self.engine.controller_config["coeff_dim"])
        if n != want:
            return f"{where}: expected {want} coefficients, got {n}"
        if frame.index <= state["last_index"]:
            return f"{where}: frame indices must increase; the previous frame was {state['last_index']}"
        x = np.asarray(frame.coeffs, np.float32)
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            return f"{where}: coefficient {bad[0]} is {x[bad[0]]} (coefficients must be finite)"
        big = np.flatnonzero(np.abs(x) > C.MAX_ABS_COEFFICIENT)
        if big.size:
            return (f"{where}: coefficient {big[0]} = {x[big[0]]:g} is outside "
                    f"[-{C.MAX_ABS_COEFFICIENT:g}, {C.MAX_ABS_COEFFICIENT:g}]")
        camera = state["portrait"]
        if len(frame.camera):
            from otavatar.camera import validate_camera

            if len(frame.camera) != 25:
                return f"{where}: camera must have 25 values (or none), got {len(frame.camera)}"
            try:
                given = validate_camera(np.asarray(frame.camera, np.float32))[0]
            except ValueError as e:
                return f"{where}: {e}"
            if state["camera_mode"] == pb.PER_FRAME:
                camera = given
        if state["camera_mode"] == pb.DRIVER:
            from otavatar.camera import camera_from_coeffs

            camera = camera_from_coeffs(x[None], smooth=False)[0]
        state["last_index"] = frame.index
        state["meta"][state["pushed"]] = (frame.index, np.asarray(camera, np.float32))
        state["pushed"] += 1
        self._queue(session, state, state["windows"].push(x))
        return None

    def _queue(self, session: _Session, state: dict[str, Any], ready: list) -> None:
        for i, window in ready:
            index, camera = state["meta"].pop(i)
            self.scheduler.put(session.stream, FrameJob(index, window, camera, time.perf_counter()))
