"""SDK timings on CPU: inversion of 200 steps of tiny, tiny render fps, one inversion step of official.

    python benchmarks/sdk_timings.py [THREADS]      # prints JSON (recorded in benchmarks/results/sdk-cpu.json)
"""
import json, sys, time, torch, numpy as np
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
import otavatar
from otavatar.demo import held_out_portrait
from otavatar.inversion import InversionConfig, invert
from otavatar.models import MotionController, TriplaneGenerator
from otavatar.training.objective import ReconstructionLoss
from otavatar.camera import look_at_camera

out = {"threads": torch.get_num_threads()}
model = otavatar.Model.resolve(None)
clip = held_out_portrait(seed=0, resolution=model.resolution)
t = time.perf_counter()
avatar = otavatar.Avatar.from_portrait(clip.images[0], model=model, aligned=True, coeffs=clip.coeffs[0],
                                       camera=clip.cameras[0], landmarks=clip.landmarks[0], steps=(100, 100),
                                       progress=False)
out["tiny_inversion_200_steps_s"] = time.perf_counter() - t
res = avatar.render(otavatar.motion.talk(seconds=4), camera="driver", batch_size=8)
out["tiny_render_fps"] = res.fps_rendered
out["tiny_render_ms_per_frame"] = res.per_frame_ms
G, C = TriplaneGenerator.official().eval(), MotionController.official().eval()
losses = ReconstructionLoss(G)
img = np.full((512, 512, 3), 200, np.uint8)


def best_step_seconds(sr_steps: int, repeats: int = 2) -> float:
    """Fastest of `repeats` single W-stage inversion steps of the official preset (with or without SR)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        invert(G, C, img, camera=look_at_camera(0, 0), losses=losses,
               config=InversionConfig(w_steps=1, wplus_steps=0, sr_steps=sr_steps))
        times.append(time.perf_counter() - t)
    return min(times)


out["official_one_inversion_step_with_sr_s"] = best_step_seconds(1)
out["official_one_inversion_step_lowres_s"] = best_step_seconds(0)
print(json.dumps(out, indent=2))
