"""The inversion worker pool behind CreateAvatar: a bounded number of jobs (running + queued), each a one-shot
inversion (otavatar.Avatar.from_portrait, torch) whose avatar file goes into the store atomically.

torch and the inversion model load in the background when the server starts, so the first CreateAvatar does
not pay for them and the server answers health checks at once. The model must be the one the served ONNX
export came from (same otavatar.Model fingerprint), or avatars would not render: `weights` names its
safetensors file; without it the embedded default is used when its fingerprint matches.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .store import AvatarStore, crash_point

__all__ = ["InversionPool", "Job", "PoolFull", "Unavailable"]


class PoolFull(Exception):
    """max_jobs jobs are running or queued (-> RESOURCE_EXHAUSTED)."""


class Unavailable(Exception):
    """Inversion cannot run here (no torch, no matching weights) (-> FAILED_PRECONDITION)."""


@dataclass
class Job:
    avatar_id: str
    tenant: str
    total: int
    step: int = 0
    loss: float = float("nan")
    state: str = "PENDING"
    reason: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def update(self, **values: Any) -> None:
        with self.changed:
            for k, v in values.items():
                setattr(self, k, v)
            self.changed.notify_all()


class InversionPool:
    def __init__(self, store: AvatarStore, *, fingerprint: str, weights: Path | None, steps: tuple[int, int],
                 workers: int, max_jobs: int, threads: int | None, stats: Any, log: Any) -> None:
        self.store, self.fingerprint, self.weights = store, fingerprint, weights
        self.steps, self.max_jobs, self.threads = steps, max_jobs, threads
        self.stats, self.log = stats, log
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otavatar-invert")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._stopping = threading.Event()
        self._model: Any = None
        self._error: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._load, name="otavatar-invert-load", daemon=True).start()

    # -- the model -------------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            import torch

            if self.threads:
                torch.set_num_threads(self.threads)
            from otavatar.model import Model

            model = Model.resolve(str(self.weights) if self.weights is not None else None)
            if model.fingerprint != self.fingerprint:
                source = self.weights or "the embedded default model"
                raise Unavailable(f"{source} has fingerprint {model.fingerprint[:16]}... but the served export "
                                  f"was made from {self.fingerprint[:16]}...; pass --weights with the weights file "
                                  "the export came from")
            self._model = model
        except ImportError as e:
            self._error = f"avatar creation needs the `train` extra (torch): {e}"
        except Exception as e:  # a missing/corrupt weights file: the server still renders imported avatars
            self._error = str(e) if isinstance(e, Unavailable) else f"cannot load the inversion model: {e}"
        finally:
            if self._error:
                self.log(f"CreateAvatar unavailable: {self._error}")
            self._ready.set()

    def available(self, wait: float | None = None) -> bool:
        self._ready.wait(wait)
        return self._model is not None

    def model(self) -> Any:
        self._ready.wait()
        if self._model is None:
            raise Unavailable(self._error or "the inversion model is not loaded")
        return self._model

    # -- jobs ------------------------------------------------------------------------------------------------
    def job(self, avatar_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(avatar_id)

    def active(self) -> int:
        with self._lock:
            return len(self._jobs)

    def submit(self, tenant: str, portrait: Any, name: str = "") -> Job:
        """portrait: an otavatar.avatar.PreparedPortrait (decoded, aligned). Raises PoolFull / Unavailable."""
        if self._stopping.is_set():
            raise Unavailable("the server is shutting down")
        self.model()
        with self._lock:
            if len(self._jobs) >= self.max_jobs:
                raise PoolFull(f"{len(self._jobs)} avatar jobs are running or queued (the limit is {self.max_jobs}); "
                               "retry later")
            record = self.store.create_pending(tenant, name)
            job = Job(record.id, tenant, total=sum(self.steps))
            self._jobs[record.id] = job
            self.stats.jobs_active = len(self._jobs)
        self._executor.submit(self._run, job, portrait)
        return job

    def _run(self, job: Job, portrait: Any) -> None:
        try:
            if self._stopping.is_set():
                raise Unavailable("interrupted: the server shut down before this avatar was created")
            from otavatar.avatar import Avatar

            if self.threads:    # process-wide; set per job because an embedding application may have changed it
                import torch

                torch.set_num_threads(self.threads)

            def progress(step: Any) -> bool:
                job.update(step=step.step + 1, total=step.total, loss=float(step.loss))
                if step.step == 0:
                    crash_point("during_inversion")
                return not self._stopping.is_set()

            avatar = Avatar.from_portrait(portrait.image, model=self._model, coeffs=portrait.coeffs,
                                          camera=portrait.camera, landmarks=portrait.landmarks, aligned=True,
                                          steps=self.steps, progress=False, callback=progress)
            if self._stopping.is_set():
                raise Unavailable("interrupted: the server shut down while this avatar was being created")
            if not np.isfinite(avatar.ws.cpu().numpy()).all():
                raise ValueError("the inversion produced non-finite values")
            scratch = self.store.scratch_path(job.avatar_id)
            try:
                avatar.save(scratch)
                data = scratch.read_bytes()
            finally:
                scratch.unlink(missing_ok=True)
            self.store.complete(job.avatar_id, data, self.fingerprint)
            job.update(state="READY", step=job.total)
        except Exception as e:
            reason = str(e) if isinstance(e, Unavailable) else f"inversion failed: {type(e).__name__}: {e}"
            self.store.mark_failed(job.avatar_id, reason)
            job.update(state="FAILED", reason=reason)
        finally:
            with self._lock:
                self._jobs.pop(job.avatar_id, None)
                self.stats.jobs_active = len(self._jobs)
            job.done.set()
            with job.changed:
                job.changed.notify_all()

    def shutdown(self, grace: float) -> None:
        """Let running jobs finish within `grace` seconds, then stop them (they end FAILED with a reason)."""
        deadline = time.monotonic() + grace
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        self._stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=False)
