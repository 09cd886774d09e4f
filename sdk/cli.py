"""The `otavatar` command line.

    otavatar convert IN [IN ...] --out OUT.safetensors [--preset official|tiny]
    otavatar env [--json]
    otavatar demo [--out out/demo] [--weights FILE] [--seed S] [--steps W WP] [--seconds S] [--fps F]
    otavatar invert PORTRAIT --out A.avatar [--model FILE] [--steps W WP] [--aligned] [--coeffs F] [--camera F]
    otavatar render A.avatar --motion talk|nod|smile|look_around|FILE --out clip.mp4|.gif|.png [--orbit]
    otavatar export (--weights W.safetensors | --preset tiny|official) --out DIR [--opset N] [--no-verify]
    otavatar synth --out DIR --subjects N --videos-per-subject K --frames T --resolution R --seed S [--force]

Importing this module loads click only; each command imports what it needs when it runs, so `otavatar env`
works (and reports "not installed") when torch, onnxruntime or grpc are missing.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from importlib import metadata as importlib_metadata
from typing import Any

import click

from otavatar import __version__

PRESET_CHOICE = click.Choice(["official", "tiny"])
NOT_INSTALLED = "not installed"
# name shown -> distributions that provide it (first one installed wins)
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "triton": ("triton",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "onnx": ("onnx",),
    "grpc": ("grpcio",),
    "safetensors": ("safetensors",),
    "click": ("click",),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otavatar")
def main() -> None:
    """One portrait photo to a 3D talking-face avatar (OTAvatar / EG3D)."""


# -- convert ------------------------------------------------------------------------------------------------

@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="IN [IN ...]", type=click.Path(dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output .safetensors file (written atomically).")
@click.option("--preset", type=PRESET_CHOICE, default=None,
              help="Architecture of the inputs (default: read off the tensor shapes).")
def convert(inputs: tuple[str, ...], out: str, preset: str | None) -> None:
    """Convert official EG3D (.pth, .pkl) and OTAvatar (.pt) checkpoints to one safetensors file.

    Formats are recognised by content. EG3D pickles are read without running the code embedded in them;
    torch files are opened with weights_only=True. Every network is loaded strictly: a missing,
    unexpected or mis-shaped tensor stops the conversion with the list of offending keys.
    """
    from otavatar.weights import WeightsError, convert_official

    try:
        report = convert_official(list(inputs), out, preset, log=lambda m: click.echo(m, err=True))
    except WeightsError as e:
        raise click.ClickException(str(e)) from None
    click.echo(report.summary())


# -- env ----------------------------------------------------------------------------------------------------

def _version(distributions: tuple[str, ...]) -> str:
    for dist in distributions:
        try:
            version = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
        except Exception as e:  # a broken install: say so instead of failing
            return f"unreadable ({type(e).__name__})"
        return version if dist == distributions[0] else f"{version} ({dist})"
    return NOT_INSTALLED


def _ort_providers() -> list[str] | str:
    try:
        import onnxruntime
    except ImportError:
        return NOT_INSTALLED
    except Exception as e:  # noqa: BLE001 - a broken native library must not crash `env`
        return f"import failed ({type(e).__name__}: {e})"
    try:
        return list(onnxruntime.get_available_providers())
    except Exception as e:  # noqa: BLE001
        return f"unavailable ({type(e).__name__}: {e})"


def _cuda_devices() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"available": False, "reason": "torch not installed", "devices": []}
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"torch import failed ({type(e).__name__}: {e})", "devices": []}
    try:
        if not torch.cuda.is_available():
            return {"available": False, "reason": f"torch {torch.__version__} sees no CUDA device",
                    "cuda": torch.version.cuda, "devices": []}
        devices = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                            "capability": f"{props.major}.{props.minor}"})
        return {"available": True, "cuda": torch.version.cuda, "devices": devices}
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"CUDA query failed ({type(e).__name__}: {e})", "devices": []}


def environment() -> dict[str, Any]:
    """Versions, ONNX Runtime providers and CUDA devices; never raises."""
    versions = {"python": platform.python_version(), "otavatar": __version__}
    versions.update({name: _version(dists) for name, dists in _DISTRIBUTIONS.items()})
    return {"versions": versions, "platform": platform.platform(), "executable": sys.executable,
            "onnxruntime_providers": _ort_providers(), "cuda": _cuda_devices()}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def env(as_json: bool) -> None:
    """Show library versions, ONNX Runtime providers and CUDA devices."""
    info = environment()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    width = max(len("ORT providers"), *map(len, info["versions"]))
    for name, version in info["versions"].items():
        click.echo(f"{name:<{width}}  {version}")
    providers = info["onnxruntime_providers"]
    click.echo(f"{'ORT providers':<{width}}  {', '.join(providers) if isinstance(providers, list) else providers}")
    cuda = info["cuda"]
    if cuda["available"]:
        for d in cuda["devices"]:
            click.echo(f"{'cuda:' + str(d['index']):<{width}}  {d['name']} ({d['memory_gib']} GiB, "
                       f"sm {d['capability']}, CUDA {cuda['cuda']})")
    else:
        click.echo(f"{'CUDA':<{width}}  none ({cuda['reason']})")
    click.echo(f"{'platform':<{width}}  {info['platform']}")


# -- demo, invert, render (the SDK: otavatar.Avatar) ---------------------------------------------------------

def _sdk_errors():
    """Errors that mean bad user input (files, images, arrays, weights): shown as one line, no traceback."""
    from otavatar.weights.state import WeightsError

    return (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, WeightsError, TypeError)


def _need_torch(command: str):
    try:
        import torch  # noqa: F401 - only checks that the extra is installed
    except ImportError as e:
        raise click.ClickException(f"`otavatar {command}` needs the `train` extra (torch): {e}") from None


_MODEL_OPTION = click.option(
    "--model", "--weights", "weights", type=click.Path(dir_okay=False), default=None,
    help="An otavatar weights file (e.g. from `otavatar convert`); default: the embedded model.")
_STEPS_HELP = "Inversion steps: W stage, then W+ stage."


@main.command()
@click.option("--out", "out_dir", default="out/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the clips, the sheet and the avatar.")
@_MODEL_OPTION
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Held-out SynthHeads identity 10000 + SEED, and the talking motion's seed.")
@click.option("--steps", type=(click.IntRange(min=1), click.IntRange(min=0)), default=(30, 30), show_default=True,
              help=_STEPS_HELP)
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True, max=600), default=4.0, show_default=True,
              help="Length of each clip.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True, max=240), default=25.0, show_default=True,
              help="Frame rate of the clips.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo(out_dir: str, weights: str | None, seed: int, steps: tuple[int, int], seconds: float, fps: float,
         quiet: bool) -> None:
    """Portrait -> avatar -> talking clip + orbit clip + contact sheet (held-out SynthHeads portrait)."""
    try:
        from otavatar.demo import render_demo
    except ImportError as e:
        raise click.ClickException(f"the demo needs the `train` extra (torch): {e}") from None
    try:
        result = render_demo(out_dir, weights=weights, seed=seed, steps=steps, seconds=seconds, fps=fps,
                             progress=not quiet, log=lambda m: click.echo(m, err=True))
    except _sdk_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(result.describe(), err=True)
    for path in result.files.values():
        click.echo(str(path))


@main.command()
@click.argument("portrait", type=click.Path(dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The avatar file to write.")
@_MODEL_OPTION
@click.option("--steps", type=(click.IntRange(min=1), click.IntRange(min=0)), default=(100, 100), show_default=True,
              help=_STEPS_HELP)
@click.option("--aligned", is_flag=True, help="The portrait is already an aligned square crop: no face detection.")
@click.option("--coeffs", type=click.Path(dir_okay=False), default=None,
              help="The portrait's coefficients (.npy/.txt/.csv/.mat, one row of 70/257/260); default: neutral "
                   "expression, pose estimated from the landmarks.")
@click.option("--camera", type=click.Path(dir_okay=False), default=None,
              help="The portrait's 25-d EG3D camera (.npy/.txt); default: from the estimated pose.")
@click.option("--landmarks", type=click.Path(dir_okay=False), default=None,
              help="68 iBUG landmarks [68,2] in pixels of PORTRAIT (.npy/.txt); enables the local loss.")
@click.option("--early-stop", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop a stage when the loss improves by less than this fraction over 20 steps.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def invert(portrait: str, out: str, weights: str | None, steps: tuple[int, int], aligned: bool, coeffs: str | None,
           camera: str | None, landmarks: str | None, early_stop: float | None, quiet: bool) -> None:
    """Invert one portrait photo into an avatar file (for `otavatar render`)."""
    _need_torch("invert")
    from otavatar.avatar import Avatar, read_array

    try:
        lm = None if landmarks is None else read_array(Path(landmarks), "landmarks")
        avatar = Avatar.from_portrait(portrait, model=weights, coeffs=coeffs, camera=camera, landmarks=lm,
                                      aligned=aligned, steps=steps, early_stop=early_stop, progress=not quiet)
        path = avatar.save(out)
    except _sdk_errors() as e:
        raise click.ClickException(str(e)) from None
    meta = avatar.metadata
    click.echo(f"inverted {portrait} in {meta['seconds']:.1f} s ({meta['steps']} steps, final loss "
               f"{meta['final_loss']:.4f}, pose {meta['pose']})", err=True)
    click.echo(str(path))


@main.command()
@click.argument("avatar_file", metavar="AVATAR", type=click.Path(dir_okay=False))
@click.option("--motion", "motion_spec", default="talk", show_default=True,
              help="A built-in motion (talk, nod, smile, look_around) or a coefficient file (.npy/.txt/.csv/.mat).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output: .mp4, .gif or .png (contact sheet), chosen by the suffix.")
@_MODEL_OPTION
@click.option("--camera", "camera_mode", default=None,
              help="portrait (default), driver (the motion's head pose), orbit, or a camera file [T,25].")
@click.option("--orbit", is_flag=True, help="Orbit the camera around the head (same as --camera orbit).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True, max=3600), default=4.0, show_default=True,
              help="Length of a built-in motion.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True, max=240), default=25.0, show_default=True,
              help="Frame rate (of a built-in motion, and of the output).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of a built-in motion.")
@click.option("--window", type=click.Choice(["centered", "causal"]), default="centered", show_default=True,
              help="Controller window: centered (13 frames look-ahead) or causal.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def render(avatar_file: str, motion_spec: str, out: str, weights: str | None, camera_mode: str | None, orbit: bool,
           seconds: float, fps: float, seed: int, window: str, quiet: bool) -> None:
    """Drive an avatar with a motion and write a video (.mp4 / .gif) or a contact sheet (.png)."""
    _need_torch("render")
    from otavatar import motion as motions
    from otavatar.avatar import Avatar
    from otavatar.media import VIDEO_SUFFIXES

    if Path(out).suffix.lower() not in VIDEO_SUFFIXES:
        raise click.BadParameter(f"{out}: the suffix must be one of {', '.join(VIDEO_SUFFIXES)}", param_hint="--out")
    if orbit and camera_mode not in (None, "orbit"):
        raise click.UsageError(f"--orbit and --camera {camera_mode} contradict each other; give one")
    camera = "orbit" if orbit else camera_mode
    try:
        if Path(motion_spec).suffix:
            drive = motions.load(motion_spec, fps=fps)
        else:
            drive = motions.get(motion_spec)(seconds=seconds, fps=fps, seed=seed)
        avatar = Avatar.load(avatar_file, model=weights)
        result = avatar.render(drive, camera=camera, window=window, progress=not quiet)
        path = result.save(out, fps=fps)
    except _sdk_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{len(result)} frames of {drive.name} at {avatar.resolution}x{avatar.resolution} "
               f"in {result.seconds:.1f} s ({result.per_frame_ms:.0f} ms/frame)", err=True)
    click.echo(str(path))


# -- export -------------------------------------------------------------------------------------------------

@main.command("export")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="An otavatar .safetensors file holding a generator and a controller (from `otavatar convert`).")
@click.option("--preset", type=PRESET_CHOICE, default=None, help="Export a preset's seeded random init instead.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: controller.onnx, generator.onnx, manifest.json (written atomically).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (>= 18, dynamo exporter).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Weights and compute precision (fp16: float16 inside, float32 inputs/outputs; needs "
                   "onnxconverter-common).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim/onnxslim simplification.")
@click.option("--no-optimize", is_flag=True,
              help="Skip the graph rewrites for ONNX Runtime speed (otavatar.export.passes; exact to fp32 rounding).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare ONNX Runtime with torch on random inputs (batch 1 and 2); fail above the tolerance.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the preset init and verify inputs.")
def export(weights: str | None, preset: str | None, out_dir: str, opset: int, precision: str, no_simplify: bool,
           no_optimize: bool, verify: bool, seed: int) -> None:
    """Export the controller and the generator to ONNX (dynamic batch) with a manifest of hashes and configs."""
    if (weights is None) == (preset is None):
        raise click.UsageError("give exactly one of --weights FILE or --preset official|tiny")
    try:
        from otavatar.export import ExportError, export_models, models_for_export
    except ImportError as e:
        raise click.ClickException(f"export needs the `train` and `export` extras (torch, onnx, onnxscript"
                                   f"{', onnxruntime' if verify else ''}): {e}") from None
    try:
        generator, controller, source = models_for_export(weights, preset, seed)
        report = export_models(out_dir, generator, controller, opset=opset, precision=precision, verify=verify,
                               simplify=not no_simplify, optimize=not no_optimize, source=source, seed=seed,
                               log=lambda m: click.echo(m, err=True))
    except ImportError as e:
        raise click.ClickException(f"export needs the `export` extra (and `cpu` for --verify): {e}") from None
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    click.echo(report.summary())


# -- synth --------------------------------------------------------------------------------------------------

@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder (written atomically).")
@click.option("--subjects", type=click.IntRange(1, 9999), default=16, show_default=True, help="Identities.")
@click.option("--videos-per-subject", type=click.IntRange(1, 99), default=1, show_default=True,
              help="Talking videos per identity.")
@click.option("--frames", type=click.IntRange(min=1), default=64, show_default=True, help="Frames per video.")
@click.option("--resolution", type=click.IntRange(8, 2048), default=128, show_default=True,
              help="Frame size in pixels (square).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the whole dataset.")
@click.option("--force", is_flag=True, help="Replace a non-empty existing output folder.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--device", default="cpu", show_default=True,
              help="Where the frames are traced: cpu, cuda, cuda:N or auto. A GPU renders the same dataset, not the "
                   "same bytes (float rounding); every documented dataset was rendered on the CPU.")
def synth(out_dir: str, subjects: int, videos_per_subject: int, frames: int, resolution: int, seed: int,
          force: bool, quiet: bool, device: str) -> None:
    """Write a SynthHeads dataset in the published OTAvatar LMDB layout, plus truth.npz (exact ground truth)."""
    try:
        from otavatar.synthetic.dataset import write_dataset
    except ImportError as e:
        raise click.ClickException(f"synth needs the `train` extra (torch, lmdb, tqdm): {e}") from None
    try:
        import lmdb  # noqa: F401
    except ImportError as e:
        raise click.ClickException(f"synth needs the `lmdb` package (the `train` extra): {e}") from None
    try:
        summary = write_dataset(out_dir, subjects, videos_per_subject, frames, resolution, seed, force=force,
                                progress=not quiet, device=device)
    except (FileExistsError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.describe())


# -- serve --------------------------------------------------------------------------------------------------

@main.command()
@click.option("--models", required=True, type=click.Path(file_okay=False, exists=True),
              help="An export folder (otavatar export): controller.onnx, generator.onnx, manifest.json.")
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="The avatar store's folder (SQLite + avatar files; created).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=50051, show_default=True, help="0: any free port.")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Require 'authorization: Bearer TOKEN'; one 'TOKEN [TENANT]' per line.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), default=None, help="Server certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), default=None, help="Server key (PEM).")
@click.option("--tls-client-ca", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--insecure", is_flag=True, default=False,
              help="Allow --token-file without TLS on a non-loopback --host (tokens then cross the network in "
                   "plaintext: only behind something that encrypts, e.g. a TLS proxy or a VPN).")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The .safetensors the export came from, for CreateAvatar (default: the embedded model if it "
                   "matches).")
@click.option("--max-streams", type=click.IntRange(min=1), default=8, show_default=True,
              help="Concurrent RenderStreams; more get RESOURCE_EXHAUSTED at once.")
@click.option("--max-jobs", type=click.IntRange(min=1), default=4, show_default=True,
              help="Avatar creations running or queued; more get RESOURCE_EXHAUSTED.")
@click.option("--job-workers", type=click.IntRange(min=1), default=1, show_default=True, help="Inversions at once.")
@click.option("--steps", type=(click.IntRange(min=0), click.IntRange(min=0)), default=(100, 100), show_default=True,
              metavar="W WP", help="Inversion steps (W stage, W+ stage).")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="Frames per ONNX Runtime run, across streams (default: 1 on CPU, 4 on GPU).")
@click.option("--providers", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=None, help="ONNX Runtime (and torch) threads.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds a SIGTERM drain waits for streams and jobs.")
@click.option("--keepalive", type=(click.FloatRange(min=0, min_open=True), click.FloatRange(min=0, min_open=True)),
              default=(30.0, 10.0), show_default=True, metavar="TIME TIMEOUT",
              help="Ping idle clients every TIME s; a client silent for TIMEOUT s more is dropped and its slot freed.")
@click.option("--max-render-failures", type=click.IntRange(min=1), default=3, show_default=True,
              help="Render steps failing in a row before the server turns not ready (device lost; restart it).")
def serve(models: str, data: str, host: str, port: int, token_file: str | None, tls_cert: str | None,
          tls_key: str | None, tls_client_ca: str | None, insecure: bool, weights: str | None, max_streams: int,
          max_jobs: int, job_workers: int, steps: tuple[int, int], max_batch: int | None, providers: str,
          threads: int | None, grace: float, keepalive: tuple[float, float], max_render_failures: int) -> None:
    """Serve avatars over gRPC (proto/avatar/v1/avatar.proto): CreateAvatar, RenderStream, health, drain on SIGTERM."""
    try:
        from otavatar.server import ServerConfig, run
    except ImportError as e:
        raise click.ClickException(f"serve needs the `serve` and `cpu` (or `gpu`) extras: {e}") from None
    try:
        config = ServerConfig(models=models, data=data, host=host, port=port, tokens=token_file, tls_cert=tls_cert,
                              tls_key=tls_key, tls_client_ca=tls_client_ca, insecure=insecure, weights=weights,
                              max_streams=max_streams, max_jobs=max_jobs, job_workers=job_workers, steps=steps,
                              max_batch=max_batch, providers=providers, threads=threads, grace_s=grace,
                              keepalive_time_s=keepalive[0], keepalive_timeout_s=keepalive[1],
                              max_render_failures=max_render_failures)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        run(config)                  # ends the process after the drain (exit code 0)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _register_train() -> None:
    """`otavatar train ...` lives in otavatar.training.cli (click only at import; torch loads per command)."""
    from otavatar.training.cli import train

    main.add_command(train)


_register_train()


if __name__ == "__main__":  # python -m otavatar.cli
    main()
