"""Max abs error of every golden array of the published networks (parity/README.md), end to end.

Loads the recipe weights (seed 0) into both official-preset networks, runs case 0 through the whole chain
from z and ws (our own planes feed our renderer, our render feeds our SR), and compares every stored
array. The tests assert tolerances; this prints the figures.

    .venv/bin/python benchmarks/parity.py [--parity-dir ../shared/parity] [--backend torch] [--device cuda]

Writes benchmarks/results/parity-<device>.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from otavatar.models import MotionController, TriplaneGenerator
from otavatar.models.rays import rays_from_cameras

REPO = Path(__file__).resolve().parents[1]
PARITY_DIRS = (REPO.parent / "shared" / "parity", REPO / "tests" / "fixtures" / "parity")


def load_recipe(parity_dir: Path):
    spec = importlib.util.spec_from_file_location("parity_recipe", parity_dir / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.recipe_state_dict


def max_abs(ours: torch.Tensor, golden: np.ndarray) -> float:
    ours = ours.detach().double().cpu().numpy().reshape(golden.shape)
    return float(np.abs(ours - golden).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parity-dir", type=Path, default=next((d for d in PARITY_DIRS if d.is_dir()), None))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # parity needs true fp32
    device = torch.device(args.device)
    recipe = load_recipe(args.parity_dir)
    keys = {name: json.loads((args.parity_dir / f"{name}_keys.json").read_text()) for name in ("eg3d", "controller")}
    G = TriplaneGenerator.official().eval()
    G.load_official_state_dict(recipe(keys["eg3d"], seed=0))
    C = MotionController.official().eval()
    C.load_official_state_dict(recipe(keys["controller"], seed=0))
    G, C = G.to(device), C.to(device)
    eg3d = dict(np.load(args.parity_dir / "eg3d_case0.npz"))
    ctrl = dict(np.load(args.parity_dir / "controller_case0.npz"))

    def t(name: str, case: dict = eg3d) -> torch.Tensor:
        return torch.from_numpy(case[name]).to(device)

    errors: dict[str, float] = {}
    with torch.no_grad():
        detail = C.forward_details(t("x", ctrl))
        for name in ("descriptor", "head", "alpha", "motion"):
            errors[f"controller.{name}"] = max_abs(getattr(detail, name), ctrl[name])
        errors["controller.Q"] = max_abs(detail.basis, ctrl["Q"])

        errors["ws_mapped"] = max_abs(G.mapping(t("z"), t("c")), eg3d["ws_mapped"])
        out = G.synthesis(t("ws"), t("c"), backend=args.backend)
        errors["planes_sub"] = max_abs(out.planes[:, :, :, ::8, ::8], eg3d["planes_sub"])
        planes = out.planes.double().flatten(3)
        for stat, value in (("mean", planes.mean(-1)), ("std", planes.std(-1, unbiased=False)),
                            ("min", planes.amin(-1)), ("max", planes.amax(-1))):
            errors[f"planes_{stat}"] = max_abs(value, eg3d[f"planes_{stat}"])
        full = args.parity_dir / "eg3d_case0_planes.npz"
        if full.is_file():
            errors["planes (full)"] = max_abs(out.planes, np.load(full)["planes"])
        origins, directions = rays_from_cameras(t("c"), 64)
        errors["ray_origins"] = max_abs(origins, eg3d["ray_origins"])
        errors["ray_directions"] = max_abs(directions, eg3d["ray_directions"])
        for ours, golden in (("features", "image_feature"), ("image_raw", "image_raw"), ("depth", "image_depth"),
                             ("weights_sum", "weights_sum"), ("image", "image")):
            errors[golden] = max_abs(getattr(out, ours), eg3d[golden])

    width = max(map(len, errors))
    for name, err in errors.items():
        print(f"{name:<{width}}  {err:.3g}")
    record = {"device": str(device), "backend": args.backend, "torch": torch.__version__,
              "parity_dir": str(args.parity_dir), "max_abs_error": errors}
    out_path = args.out or Path(__file__).parent / "results" / f"parity-{device.type}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
