"""Assemble and run the server: store recovery, the ONNX Runtime engine, the render loop, the inversion pool,
gRPC (AvatarService + grpc.health.v1), TLS, and a graceful drain on SIGTERM / SIGINT.

    server = Server(ServerConfig(models="out/onnx", data="var/avatars", port=0)).start()
    print(server.port); ...; server.stop()

Not ready (reliability.md F8, S5): when the model folder does not load (a file missing, a sha256 that does not
match the manifest, a graph ONNX Runtime refuses, an execution provider that fails), the process stays live but
not ready: gRPC listens, health answers NOT_SERVING, every AvatarService call answers UNAVAILABLE naming the
error, and the avatar store is left as it was (recovery still runs; no avatar is marked FAILED for the model).
It does not retry: the files do not change by themselves, so the operator fixes the folder and restarts.

An engine that stops working (reliability.md F7 b: `max_render_failures` render steps in a row fail, as when the
GPU is lost) turns the server not ready the same way, with one NOT READY log line; open streams end UNAVAILABLE.
Recovery is a supervised restart, not an in-process reload: a CUDA context that hit a sticky error (an illegal
address, a lost device) stays broken for the life of the process, so a new session in it would fail again or,
worse, flap between ready and not ready; a fresh process is the one recovery that works for every cause. The
operator or the supervisor (e.g. a Kubernetes liveness probe on grpc.health.v1) restarts it; the store is on
disk, so nothing is lost.

Drain (reliability.md F6): health turns NOT_SERVING first; after `drain_delay_s` new RPCs get UNAVAILABLE and
open streams end with UNAVAILABLE; running inversions get up to `grace_s` to finish (else they end FAILED with
a reason); gRPC then stops with the remaining grace, and the process exits 0.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NoReturn

from . import config as C
from .config import ServerConfig

__all__ = ["Server", "run"]


def _stderr(message: str) -> None:
    print(f"otavatar serve: {message}", file=sys.stderr, flush=True)


class Server:
    def __init__(self, config: ServerConfig, log: Callable[[str], None] = _stderr) -> None:
        self.config = config
        self.log = log
        self.port: int | None = None
        self.recovery: Any = None
        self.unavailable_reason: str | None = None     # not ready: why the model did not load (F8)
        self._grpc: Any = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    def start(self) -> "Server":
        import grpc
        from grpc_health.v1 import health, health_pb2_grpc

        from ._proto import avatar_pb2_grpc as pb_grpc
        from .auth import TokenTable
        from .jobs import InversionPool
        from .scheduler import RenderScheduler, Stats
        from .service import AvatarServicer
        from .store import AvatarStore

        cfg = self.config
        tokens = TokenTable.load(cfg.tokens)
        self.store = AvatarStore(cfg.data)
        self.recovery = self.store.recover()
        r = self.recovery
        self.log(f"store {cfg.data}: integrity {r.integrity}; removed {r.temp_files_removed} temporary and "
                 f"{r.orphan_blobs_removed} orphan files; {r.interrupted_failed} interrupted, {r.missing_blob_failed} "
                 f"missing and {r.corrupt_blob_failed} corrupt avatars marked FAILED ({r.seconds * 1000:.0f} ms)")
        self.engine, self.unavailable_reason = self._load_engine()
        self.stats = Stats()
        self.scheduler = self.pool = None
        if self.engine is not None:
            max_batch = cfg.max_batch or (1 if self.engine.providers == ["CPUExecutionProvider"] else 4)
            self.scheduler = RenderScheduler(self.engine, max_batch=max_batch, stats=self.stats,
                                             max_failures=cfg.max_render_failures, on_unusable=self._engine_unusable)
            self.pool = InversionPool(self.store, fingerprint=self.engine.manifest.get("model_fingerprint", ""),
                                      weights=cfg.weights, steps=cfg.steps, workers=cfg.job_workers,
                                      max_jobs=cfg.max_jobs, threads=cfg.threads, stats=self.stats, log=self.log)
        self.servicer = AvatarServicer(config=cfg, store=self.store, engine=self.engine, scheduler=self.scheduler,
                                       pool=self.pool, tokens=tokens, stats=self.stats,
                                       unavailable=self.unavailable_reason)
        # one thread per stream, per CreateAvatar progress stream, plus unary calls; beyond that the library
        # answers RESOURCE_EXHAUSTED rather than queueing (maximum_concurrent_rpcs)
        workers = cfg.max_streams + cfg.max_jobs + 8
        options = [
            ("grpc.max_receive_message_length", C.MAX_RECEIVE_MESSAGE_BYTES),
            ("grpc.max_send_message_length", C.MAX_SEND_MESSAGE_BYTES),
            # clients may ping every 10 s (Unity / grpc-dotnet defaults) without a GOAWAY too_many_pings (L6)
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.keepalive_permit_without_calls", 1),
            # the server pings its peers: a frozen client is detected within time + timeout (F2). Recent gRPC
            # core (grpc/grpc#34647; grpcio 1.85 here) waits ping_timeout_ms (default 60 s) for the ack of any
            # ping, and a keepalive ping due while a BDP ping is unanswered joins it: without this option a client
            # frozen just after a BDP ping still held its slot 30 s later in 5 of 7 runs of the F2 test (with it:
            # 6 of 6 freed in 3.0-5.1 s at 2 s + 3 s)
            ("grpc.keepalive_time_ms", round(cfg.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", round(cfg.keepalive_timeout_s * 1000)),
            ("grpc.http2.ping_timeout_ms", round(cfg.keepalive_timeout_s * 1000)),
            ("grpc.so_reuseport", 0),                 # a second server on the same port fails instead of sharing
        ]
        self._grpc = grpc.server(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otavatar-rpc"),
                                 options=options, maximum_concurrent_rpcs=workers)
        pb_grpc.add_AvatarServiceServicer_to_server(self.servicer, self._grpc)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        if cfg.tls_cert is not None:
            client_ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca is not None else None
            credentials = grpc.ssl_server_credentials([(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
                                                      root_certificates=client_ca,
                                                      require_client_auth=client_ca is not None)
            self.port = self._grpc.add_secure_port(cfg.address, credentials)
        else:
            self.port = self._grpc.add_insecure_port(cfg.address)
        if not self.port:
            raise OSError(f"cannot listen on {cfg.address}")
        self._grpc.start()
        ready = self.unavailable_reason is None
        self._set_health(ready)
        mode = "mutual TLS" if cfg.tls_client_ca else "TLS" if cfg.tls_cert else "plaintext"
        where = f"on {cfg.host}:{self.port} ({mode}, auth {'on' if tokens.enabled else 'off'}"
        if ready:
            self.log(f"serving {cfg.models} {where}, {', '.join(self.engine.providers)}, up to {cfg.max_streams} "
                     "streams)")
        else:
            self.log(f"NOT READY: {self.unavailable_reason}. Listening {where}) with health NOT_SERVING; every "
                     f"AvatarService call answers UNAVAILABLE. No retry: fix or re-export {cfg.models}, then "
                     "restart the server")
        return self

    def _set_health(self, serving: bool) -> None:
        from grpc_health.v1 import health_pb2

        from .service import SERVICE_NAME

        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _engine_unusable(self, reason: str) -> None:
        """The render loop gave the engine up (F7 b): not ready, as when the model does not load (F8)."""
        self.unavailable_reason = self.servicer.unavailable = reason
        self._set_health(False)
        self.log(f"NOT READY: {reason}. Health NOT_SERVING; every AvatarService call answers UNAVAILABLE and open "
                 "streams end UNAVAILABLE. No reload in this process (a lost device stays lost to it): restart the "
                 "server, or let its supervisor restart it on health NOT_SERVING")

    def _load_engine(self) -> tuple[Any, str | None]:
        """(Engine, None), or (None, "model not loaded: why") when the model folder does not load (F8)."""
        from otavatar.runtime import Engine, ManifestError

        cfg = self.config
        try:
            return Engine(cfg.models, cfg.providers, threads=cfg.threads), None
        except ImportError:          # onnxruntime not installed: an installation problem, not the model's
            raise
        except (ManifestError, OSError) as e:    # missing file, sha256 mismatch: the message names the file
            return None, f"model not loaded: {e}"
        except Exception as e:       # ONNX Runtime's own errors (a graph it cannot parse, an EP that fails: F9)
            return None, f"model not loaded: {cfg.models}: {type(e).__name__}: {e}"

    def stop(self, grace: float | None = None) -> None:
        """Drain (module docstring) and stop; safe to call twice and from a signal handler's thread."""
        with self._stop_lock:
            if self._stopped.is_set() or self._grpc is None:
                return
            grace = self.config.grace_s if grace is None else grace
            start = time.monotonic()
            self.health.enter_graceful_shutdown()          # NOT_SERVING first, and it stays so
            self.log("draining: health NOT_SERVING")
            time.sleep(self.config.drain_delay_s)
            self.servicer.draining = True
            if self.scheduler is not None:                 # None: not ready, nothing renders or inverts
                with self.scheduler.cond:
                    self.scheduler.cond.notify_all()
                self.pool.shutdown(max(0.0, grace - (time.monotonic() - start)))
            self._grpc.stop(max(0.0, grace - (time.monotonic() - start))).wait()
            if self.scheduler is not None:
                self.scheduler.stop()
            self.store.close()
            self.log(f"stopped in {time.monotonic() - start:.1f} s")
            self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


def run(config: ServerConfig) -> NoReturn:
    """`otavatar serve`: start, drain on SIGTERM / SIGINT, then end the process with exit code 0."""
    server = Server(config).start()
    drains: list[threading.Thread] = []

    def on_signal(signum: int, frame: Any) -> None:
        drain = threading.Thread(target=server.stop, name="otavatar-drain", daemon=True)
        drains.append(drain)
        drain.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not server._stopped.wait(0.5):       # a plain wait() would not let Python run the signal handler
        pass
    for drain in drains:
        drain.join()
    # Everything is drained, closed and logged by now. A normal interpreter exit would still run the native
    # libraries' static destructors (gRPC, ONNX Runtime, torch's thread pools), and with their threads idle but
    # alive one of them can abort the process ("terminate called without an active exception", exit -6, seen
    # twice at the kill -9 test's final SIGTERM on a loaded 2-core CPU), turning a clean drain into a crash for
    # the supervisor. So the exit skips them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
