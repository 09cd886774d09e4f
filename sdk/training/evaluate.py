"""One-shot cross-identity reenactment on held-out SynthHeads identities, scored against exact ground truth.

For each pair (source video s, driver video d) of the TEST split: the portrait is frame 0 of s (its image,
70 coefficients, camera and landmarks from the LMDB); it is inverted (otavatar.inversion.invert) and driven by
d's first `frames` coefficients and cameras (render_motion); the ground truth is SynthHeads rendering s's
identity performing d's motion from d's cameras (synthetic.render), at the generator's resolution. Scores:

    PSNR, SSIM        generated vs ground-truth frames (otavatar.training.metrics; per frame, then averaged)
    AKD               FaceProbe landmarks of the generated frames vs the TRUE landmarks of the ground truth (px)
    AKD per region    the same over the jaw line, brows, nose, eyes or mouth (mean["akd_mouth"] etc.; per pair,
                      akd_landmarks holds all 68): expression moves the jaw and mouth, identity and pose the rest
    AED               FaceProbe controls of the generated frames vs the driver's TRUE controls (L1, 8 controls)
    detected AKD/AED  the probe on the generated frames vs the probe on the ground-truth frames (akd_detected,
                      aed_detected, akd_detected_<region>): AKD and AED as the talking-head papers define them, one
                      detector on both images. The probe's own error on a face (the floor, 1.77 px) is shared by
                      both readings instead of added to every model's score: on the first held-out set a perfect
                      reenactment beats a perfect static identity by 0.45 +- 0.07 px here, by 0.05 +- 0.03 px in
                      AKD (docs/training-rounds.md, round 15; on a face that reads a few px off, by neither)
    aligned AKD       detected AKD after mapping each generated frame's landmarks onto the truth's by their best
                      similarity (akd_aligned, akd_aligned_<region>): the face's shape and expression without where
                      it sits; registration_shift / registration_scale hold that similarity. On the shipped `tiny`
                      generator most of the detected AKD is this similarity (round 19)
    floor AKD / AED   the same probe on the ground-truth frames themselves: what the metric cannot resolve
    AED (readable)    AED over the controls the probe can read: those whose floor error, pooled over every
                      evaluated frame, is at most READABLE_RATIO x the error of the best constant (the truth's
                      median, the L1 optimum). Chosen from the ground truth alone, so it cannot favour a model;
                      NaN when the probe reads no control.

mode="controller" inverts and drives with the controller; mode="static" passes controller=None to both
(inversion without the controller: a static identity code rendered from the driver's cameras). Evaluating the
`joint` ablation is this harness with that model's generator and controller.

    report = evaluate_reenactment(G, C, truth_npz="/work/data/synth/truth.npz", frames=32)
    print(report.table()); json.dump(report.to_dict(), f)
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from otavatar.training.metrics import (LANDMARK_REGIONS, expression_error_per_control, landmark_distance_per_point,
                                       psnr, region_means, similarity_registration, ssim)

__all__ = ["PairResult", "ReenactmentReport", "evaluate_reenactment", "default_pairs", "json_safe", "MODES",
           "READABLE_RATIO", "pair_truth", "evaluation_inversion", "evaluation_inverter"]

MODES = ("controller", "static")
_METRICS = ("psnr", "ssim", "akd", "aed", "floor_akd", "floor_aed", "akd_detected", "aed_detected", "akd_aligned",
            "registration_shift", "registration_scale")
# Blinks, pucker and brow furrow are 0 in 49-81% of the talking frames, so an L1-trained probe that cannot see them
# answers 0 and scores their median's error exactly, whatever the image: then the generated frames' error equals
# the floor for every model and says nothing. A control counts as read when the probe on the truth beats the best
# constant by a margin (0.75 of its error).
READABLE_RATIO = 0.75


@dataclass
class PairResult:
    source: str                    # source video (the portrait is its frame 0)
    driver: str                    # driver video (its first `frames` frames drive the avatar)
    frames: int
    psnr: float                    # dB, mean over frames (inf when every frame is exact)
    ssim: float
    akd: float                     # px at the generator's resolution
    aed: float                     # mean |controls| error
    floor_akd: float               # probe on the ground truth vs the truth
    floor_aed: float
    aed_controls: list[float]      # [8] per-control |error| of the generated frames (CONTROLS order)
    floor_aed_controls: list[float]
    inversion_seconds: float
    render_seconds: float
    inversion_loss: float | None = None
    akd_landmarks: list[float] = field(default_factory=list)        # [68] per-landmark AKD (its mean is akd)
    floor_akd_landmarks: list[float] = field(default_factory=list)  # [68] the probe on the truth
    akd_detected: float = math.nan  # px, probe on the generated frames vs probe on the truth (NaN: not measured)
    aed_detected: float = math.nan
    akd_detected_landmarks: list[float] = field(default_factory=list)   # [68]
    aed_detected_controls: list[float] = field(default_factory=list)    # [8]
    # detected AKD split in two (metrics.similarity_registration, per frame): the shape left once the generated
    # landmarks are mapped onto the truth's by their best similarity, and that similarity (where the face sits)
    akd_aligned: float = math.nan   # px
    akd_aligned_landmarks: list[float] = field(default_factory=list)    # [68]
    registration_shift: float = math.nan   # px, mean over frames of |shift|
    registration_scale: float = math.nan   # mean over frames; > 1: the generated face is smaller than the truth's


@dataclass
class ReenactmentReport:
    mode: str
    frames: int                    # driving frames per pair
    resolution: int
    pairs: list[PairResult]
    mean: dict[str, float]         # of every metric over pairs, plus aed_readable / floor_aed_readable
    seconds: float
    controls: dict[str, dict[str, float]] = field(default_factory=dict)   # name -> aed, floor, baseline (pooled)
    readable_controls: list[str] = field(default_factory=list)
    inversion: dict[str, Any] = field(default_factory=dict)   # the InversionConfig used
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-safe (infinite PSNR written as the string "inf")."""
        return json_safe(asdict(self))

    def table(self) -> str:
        """Markdown table: one row per pair and the mean."""
        head = ("| source | driver | PSNR (dB) | SSIM | AKD (px) | AED | floor AKD | floor AED | detected AKD | "
                "detected AED | aligned AKD |\n|---|---|---|---|---|---|---|---|---|---|---|")
        rows = [f"| {p.source} | {p.driver} | {p.psnr:.2f} | {p.ssim:.4f} | {p.akd:.2f} | {p.aed:.4f} | "
                f"{p.floor_akd:.2f} | {p.floor_aed:.4f} | {p.akd_detected:.2f} | {p.aed_detected:.4f} | "
                f"{p.akd_aligned:.2f} |" for p in self.pairs]
        m = self.mean
        rows.append(f"| **mean** ({self.mode}) | {len(self.pairs)} pairs x {self.frames} frames | {m['psnr']:.2f} | "
                    f"{m['ssim']:.4f} | {m['akd']:.2f} | {m['aed']:.4f} | {m['floor_akd']:.2f} | "
                    f"{m['floor_aed']:.4f} | {m['akd_detected']:.2f} | {m['aed_detected']:.4f} | "
                    f"{m['akd_aligned']:.2f} |")
        if self.readable_controls:
            rows.append(f"\nAED over the controls the probe reads ({', '.join(self.readable_controls)}): "
                        f"{m['aed_readable']:.4f} (floor {m['floor_aed_readable']:.4f})")
        else:
            rows.append("\nAED over the controls the probe reads: none (on the ground truth the probe does no better "
                        "than a constant for any control, so AED cannot rank these models)")
        return "\n".join([head, *rows])


def json_safe(v: Any) -> Any:
    """v with every non-finite float (nested in dicts, lists, tuples) as the string "inf", "-inf" or "nan"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def default_pairs(truth: Any, videos_per_subject: int = 1, *, split: str = "test",
                  subjects: int | None = None) -> list[tuple[str, str]]:
    """Each `split` subject's first `videos_per_subject` videos as sources, video k driven by the NEXT such
    subject's video k (cyclically; that subject's last video when it has fewer; a lone subject drives itself). The
    default of 1 is the protocol of the tables in docs/training-rounds.md; 2 on SynthHeads doubles the pairs.
    split "train" scores cross-identity reenactment among the identities training saw (what a model memorised,
    docs/training-rounds.md round 27); subjects: only the split's first N subjects (by subject index)."""
    if isinstance(videos_per_subject, bool) or not isinstance(videos_per_subject, (int, np.integer)) \
            or videos_per_subject < 1:
        raise ValueError(f"videos_per_subject must be an int >= 1, got {videos_per_subject!r}")
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    if subjects is not None and (isinstance(subjects, bool) or not isinstance(subjects, (int, np.integer))
                                 or subjects < 1):
        raise ValueError(f"subjects must be an int >= 1 or None, got {subjects!r}")
    by_subject: dict[int, list[str]] = {}
    for name, subj, where in zip(truth["videos"], truth["subject"], truth["split"]):
        if str(where) == split:
            by_subject.setdefault(int(subj), []).append(str(name))
    order = [by_subject[s] for s in sorted(by_subject)][:subjects]
    if not order:
        raise ValueError(f"truth.npz has no {split} videos")
    pairs = []
    for k in range(videos_per_subject):
        for i, videos in enumerate(order):
            if k < len(videos):
                drivers = order[(i + 1) % len(order)]
                pairs.append((videos[k], drivers[min(k, len(drivers) - 1)]))
    return pairs


def pair_truth(truth: Mapping[str, NDArray], source: int, driver: int, frames: int, resolution: int):
    """(Motion, synthetic.render result) of the pair's ground truth: the `source` video's identity performing the
    `driver` video's first `frames` frames of motion, from its cameras (indices into truth.npz's videos)."""
    from otavatar.synthetic import Identity, Motion, render

    motion = Motion(truth["controls"][driver][:frames], truth["angles"][driver][:frames],
                    truth["translation"][driver][:frames])
    who = Identity.sample(int(truth["identity_seed"][int(truth["subject"][source])]))
    return motion, render(who, motion, resolution=resolution)


def evaluation_inversion(w_steps: int, wplus_steps: int, lr: float = 0.01, intrinsics: bool = True):
    """The InversionConfig `train evaluate --steps W W+ --lr LR [--no-intrinsics]` inverts each portrait with (SR
    in the W stage's last tenth, 1 to 10 steps). intrinsics=False keeps the portrait's camera as given: SynthHeads'
    cameras are exact, and the published correction (spec 4.2) exists for a tracker's focal error."""
    from otavatar.inversion import InversionConfig

    return InversionConfig(w_steps=max(1, w_steps), wplus_steps=wplus_steps, lr=lr,
                           sr_steps=min(10, max(1, w_steps // 10)), optimize_intrinsics=intrinsics)


def evaluation_inverter(generator, config, identity_encoder: str | None = "synthheads"):
    """(invert_fn, losses): the portrait inversion `train evaluate` runs with `config` (evaluation_inversion), its
    losses built as that command builds them (identity_encoder: 'synthheads', an ArcFace file or None), and an
    `invert_fn` for evaluate_reenactment that inverts with them."""
    from otavatar import inversion
    from otavatar.training.objective import ReconstructionLoss

    losses = ReconstructionLoss.from_files(generator, weights=config.weights, identity_encoder=identity_encoder)
    losses = losses.to(next(generator.parameters()).device)
    return (lambda *a, **k: inversion.invert(*a, losses=losses, **k)), losses


def _lmdb_root(truth_npz: Path, lmdb_dir: str | os.PathLike | None) -> Path:
    return Path(lmdb_dir) if lmdb_dir is not None else truth_npz.parent


def evaluate_reenactment(generator, controller, *, truth_npz: str | os.PathLike,
                         pairs: Sequence[tuple[str, str]] | None = None, frames: int = 32, mode: str = "controller",
                         inversion: Any = None, probe: Any = None, seed: int = 0, progress: bool = True,
                         lmdb_dir: str | os.PathLike | None = None, invert_fn: Callable | None = None,
                         render_fn: Callable | None = None,
                         on_pair: Callable[[PairResult, NDArray[np.uint8], NDArray[np.uint8]], Any] | None = None,
                         ) -> ReenactmentReport:
    """Score one-shot cross-identity reenactment (module docstring).

    pairs: (source video, driver video) names; None = default_pairs (test split). frames: driving frames per
    pair (at most the driver's length). inversion: an InversionConfig (None = its defaults). probe: a FaceProbe
    (None = the shipped default). lmdb_dir: the dataset root (None = the folder holding truth_npz).
    invert_fn / render_fn: stand-ins for otavatar.inversion.invert / render_motion (tests).
    on_pair(result, generated uint8 [T,R,R,3], truth uint8 [T,R,R,3]) is called after each pair.
    """
    import torch

    from otavatar.training.lmdb_dataset import LmdbDataset

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "controller" and controller is None:
        raise ValueError("mode='controller' needs a controller (use mode='static' for inversion without it)")
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be an int >= 1, got {frames!r}")
    if invert_fn is None or render_fn is None or inversion is None:
        from otavatar.inversion import InversionConfig, invert, render_motion

        invert_fn = invert_fn or invert
        render_fn = render_fn or render_motion
        inversion = InversionConfig() if inversion is None else inversion
    if probe is None:
        from otavatar.training.probe import load_probe

        probe = load_probe()
    truth_path = Path(truth_npz)
    with np.load(truth_path) as z:
        truth = {k: z[k] for k in z.files}          # an NpzFile would re-read an array on every access
    names = [str(v) for v in truth["videos"]]
    index = {v: i for i, v in enumerate(names)}
    pairs = default_pairs(truth) if pairs is None else [(str(s), str(d)) for s, d in pairs]
    for s, d in pairs:
        for v in (s, d):
            if v not in index:
                raise ValueError(f"video {v!r} is not in {truth_path} (videos: {names[:4]}...)")
    ctrl = controller if mode == "controller" else None
    res = int(generator.config.img_resolution)
    start = time.perf_counter()
    results: list[PairResult] = []
    gen_controls, floor_controls, true_controls = [], [], []    # [T,8] per pair, pooled for the readable AED
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc=f"reenact ({mode})", dynamic_ncols=True)
    with LmdbDataset(_lmdb_root(truth_path, lmdb_dir)) as ds:
        for s, d in pairs:
            i_s, i_d = index[s], index[d]
            t = min(int(frames), int(truth["controls"].shape[1]))
            image = np.array(ds.frame(s, 0))                                  # uint8 [r,r,3], writable
            coeffs = ds.controller_input(s)[0]                                # [70]
            camera = ds.cameras(s)[0]                                         # [25]
            landmarks = ds.keypoints(s, resolution=image.shape[0])[0]         # [68,2] px of `image`
            motion, gt = pair_truth(truth, i_s, i_d, t, res)
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            result = invert_fn(generator, ctrl, image, coeffs=coeffs, camera=camera, landmarks=landmarks,
                               config=inversion, progress=False)
            t1 = time.perf_counter()
            generated = np.asarray(render_fn(generator, ctrl, result, motion.coeffs(), motion.cameras(),
                                             batch_size=8))
            t2 = time.perf_counter()
            if generated.shape != gt.images.shape or generated.dtype != np.uint8:
                raise ValueError(f"render_motion gave {generated.dtype} {list(generated.shape)}; expected uint8 "
                                 f"{list(gt.images.shape)}")
            p_gen, p_gt = probe.predict(generated), probe.predict(gt.images)
            aed_c = expression_error_per_control(p_gen.controls, gt.controls)        # [8]
            akd_k = landmark_distance_per_point(p_gen.landmarks, gt.landmarks)      # [68]
            floor_k = landmark_distance_per_point(p_gt.landmarks, gt.landmarks)
            floor_c = expression_error_per_control(p_gt.controls, gt.controls)
            detected_k = landmark_distance_per_point(p_gen.landmarks, p_gt.landmarks)     # [68]
            detected_c = expression_error_per_control(p_gen.controls, p_gt.controls)      # [8]
            registration = similarity_registration(p_gen.landmarks, p_gt.landmarks)
            aligned_k = landmark_distance_per_point(registration.aligned, p_gt.landmarks)  # [68]
            frame_psnr = [psnr(a, b) for a, b in zip(generated, gt.images)]
            losses = getattr(result, "losses", None)
            pr = PairResult(
                source=s, driver=d, frames=t, psnr=float(np.mean(frame_psnr)),
                ssim=float(np.mean([ssim(a, b) for a, b in zip(generated, gt.images)])),
                akd=float(akd_k.mean()), aed=float(aed_c.mean()),
                floor_akd=float(floor_k.mean()), floor_aed=float(floor_c.mean()),
                aed_controls=aed_c.tolist(), floor_aed_controls=floor_c.tolist(),
                inversion_seconds=t1 - t0, render_seconds=t2 - t1,
                inversion_loss=float(losses[-1]) if losses else None,
                akd_landmarks=akd_k.tolist(), floor_akd_landmarks=floor_k.tolist(),
                akd_detected=float(detected_k.mean()), aed_detected=float(detected_c.mean()),
                akd_detected_landmarks=detected_k.tolist(), aed_detected_controls=detected_c.tolist(),
                akd_aligned=float(aligned_k.mean()), akd_aligned_landmarks=aligned_k.tolist(),
                registration_shift=float(np.linalg.norm(registration.shift, axis=-1).mean()),
                registration_scale=float(registration.scale.mean()))
            results.append(pr)
            gen_controls.append(p_gen.controls)
            floor_controls.append(p_gt.controls)
            true_controls.append(gt.controls)
            if on_pair is not None:
                on_pair(pr, generated, gt.images)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(psnr=f"{pr.psnr:.2f}", akd=f"{pr.akd:.2f}")
    if bar is not None:
        bar.close()
    mean = {k: float(np.mean([getattr(p, k) for p in results])) for k in _METRICS}
    for prefix, column in (("akd_", "akd_landmarks"), ("floor_akd_", "floor_akd_landmarks"),
                           ("akd_detected_", "akd_detected_landmarks"), ("akd_aligned_", "akd_aligned_landmarks")):
        regions = [region_means(getattr(p, column)) for p in results]     # akd_mouth etc.: where expression shows
        for region in LANDMARK_REGIONS:
            mean[prefix + region] = float(np.mean([r[region] for r in regions]))
    controls, readable = _readable_controls(np.concatenate(gen_controls), np.concatenate(floor_controls),
                                            np.concatenate(true_controls))
    for key, column in (("aed_readable", "aed"), ("floor_aed_readable", "floor")):
        mean[key] = float(np.mean([controls[name][column] for name in readable])) if readable else math.nan
    inv = asdict(inversion) if hasattr(inversion, "__dataclass_fields__") else {}
    notes = [f"ground truth: synthetic.render at {res} px of the source identity under the driver's motion and "
             f"cameras; AKD/AED from FaceProbe (floor = probe on the ground truth)"]
    return ReenactmentReport(mode=mode, frames=min(int(frames), int(truth["controls"].shape[1])), resolution=res,
                             pairs=results, mean=mean, seconds=time.perf_counter() - start, inversion=inv,
                             notes=notes, controls=controls, readable_controls=readable)


def _readable_controls(generated: np.ndarray, floor: np.ndarray, truth: np.ndarray
                       ) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per control (pooled over frames [N,8]): the generated frames' error, the probe's error on the truth, and
    the baseline error of the best constant (the truth's median); readable = floor <= READABLE_RATIO x baseline."""
    from otavatar.synthetic.params import CONTROLS

    aed = expression_error_per_control(generated, truth)
    flo = expression_error_per_control(floor, truth)
    base = np.abs(truth - np.median(truth, 0)).mean(0)
    table = {name: {"aed": float(a), "floor": float(f), "baseline": float(b)}
             for name, a, f, b in zip(CONTROLS, aed, flo, base)}
    readable = [name for name, f, b in zip(CONTROLS, flo, base) if b > 1e-9 and f <= READABLE_RATIO * b]
    return table, readable
