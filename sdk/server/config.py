"""The server's settings: one frozen dataclass, validated once (the CLI and the tests build it)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

MiB = 2**20

# Per-method byte caps (reliability.md: B6 proposes 10 MB portraits). gRPC Python has one receive cap per
# server, so the library cap is the largest method cap plus framing (12 MiB), and each handler checks its own.
MAX_IMAGE_BYTES = 10 * 10**6            # CreateAvatar.image
MAX_IMAGE_PIXELS = 4096 * 4096          # 16.8 MP: B6 proposal, well below Pillow's 89.5 MP bomb guard
MAX_AVATAR_FILE_BYTES = 1 * MiB         # ImportAvatar: an official avatar is 14x512 floats + 113 = ~30 KB
MAX_RENDER_MESSAGE_BYTES = 4096         # one RenderRequest: a header or 70 + 25 floats (~500 bytes)
MAX_RECEIVE_MESSAGE_BYTES = 12 * MiB
# 512x512 RGBA = 1 MiB per frame and up to 1024x1024 output (4 MiB): above gRPC's 4 MiB default.
MAX_SEND_MESSAGE_BYTES = 16 * MiB
MAX_OUTPUT_SIZE = 1024
MAX_ABS_COEFFICIENT = 1000.0            # 3DMM expression/angle/translation values are O(1)-O(10); 1e3 = garbage
DEFAULT_QUEUE_DEPTH = 2                 # reliability.md: slow consumer, queue depth 1-2
MAX_QUEUE_DEPTH = 8
IDLE_TIMEOUT_S = 10.0                   # reliability.md proposal T_idle = 10 s; the stream ends ABORTED


@dataclass(frozen=True)
class ServerConfig:
    """models: an export folder (otavatar export); data: the avatar store's folder (created).
    weights: the .safetensors file the export came from, for CreateAvatar's inversion (None: the embedded
    default when its fingerprint matches the export, else CreateAvatar answers FAILED_PRECONDITION).
    tokens: a token file ("TOKEN [TENANT]" per line; None: no auth, one tenant "default").
    tls_cert/tls_key (PEM) turn TLS on; tls_client_ca additionally requires client certificates (mutual TLS).
    insecure: allow tokens over plaintext on a non-loopback host (reliability.md S7: refused without it)."""

    models: Path
    data: Path
    host: str = "127.0.0.1"              # reliability.md S8: loopback unless asked
    port: int = 50051                    # 0: pick a free port (see Server.port)
    tokens: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure: bool = False               # S7: tokens in plaintext beyond loopback only when asked for
    weights: Path | None = None
    max_streams: int = 8
    max_jobs: int = 4                    # inversion jobs running + queued; more: RESOURCE_EXHAUSTED
    job_workers: int = 1                 # inversions at once (each is CPU/GPU heavy)
    steps: tuple[int, int] = (100, 100)  # inversion (W steps, W+ steps), the published default
    # frames per ONNX Runtime run, across streams. None: 1 on the CPU EP, where a run of B frames costs B single
    # runs (benchmarks/results/serve-cpu.json: batching only added latency), 4 on a GPU EP, where a batch fills
    # the device better (not measured in this project yet)
    max_batch: int | None = None
    providers: str = "auto"
    threads: int | None = None           # ONNX Runtime intra-op threads (and torch's for inversion)
    idle_timeout_s: float = IDLE_TIMEOUT_S
    # render steps in a row in which every ONNX Runtime run failed before the engine is given up and the server
    # turns not ready (reliability.md F7 b). Not 1: a failing run is retried per stream, so a step fails whole
    # only when every stream in it failed, and one such step is what a transient fault looks like (F7 a: only
    # that stream ends INTERNAL). A lost device fails every step, so 3 costs at most 3 steps' streams (one
    # stream each on the CPU EP, ~0.1 s a step for tiny) before health says NOT_SERVING.
    max_render_failures: int = 3
    grace_s: float = 10.0                # SIGTERM: streams get a final status within this (reliability.md F6)
    drain_delay_s: float = 0.5           # NOT_SERVING this long before refusing, so health checkers notice
    # the server pings every peer this often and closes a transport whose ping is not answered within the
    # timeout, so a frozen or vanished client frees its stream slots within time + timeout (reliability.md F2)
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("models", "data", "tokens", "tls_cert", "tls_key", "tls_client_ca", "weights"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key (PEM files), or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        if self.tokens is not None and self.tls_cert is None and not self.insecure and not is_loopback(self.host):
            raise ValueError(f"a token file on host {self.host!r} without TLS would send the tokens in plaintext "
                             "over the network: give --tls-cert and --tls-key, bind a loopback host (127.0.0.1), or "
                             "pass --insecure (insecure=True) if something else encrypts the traffic")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port!r}")
        for name in ("max_streams", "max_jobs", "job_workers", "max_batch", "max_render_failures"):
            value = getattr(self, name)
            if name == "max_batch" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        steps = tuple(self.steps)
        if len(steps) != 2 or not all(isinstance(s, int) and s >= 0 for s in steps) or sum(steps) < 1:
            raise ValueError(f"steps must be (W steps, W+ steps), non-negative ints, not both 0; got {self.steps!r}")
        object.__setattr__(self, "steps", steps)
        for name in ("idle_timeout_s", "grace_s", "drain_delay_s"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("keepalive_time_s", "keepalive_timeout_s"):
            if not float(getattr(self, name)) >= 0.001:        # gRPC takes whole milliseconds
                raise ValueError(f"{name} must be >= 0.001 (1 ms), got {getattr(self, name)!r}")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as ::ffff:127.x.x.x) and "localhost"; any other name or address is not."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:                   # a host name: it may resolve to any interface
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
