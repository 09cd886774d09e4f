#!/usr/bin/env bash
# The training issue's ablation on one lent GPU, in one device call (docs/training.md, "The ablation on a GPU").
#
# Here, once per session (the device machine has no lmdb and cannot download it):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl lmdb==3.0.0
# Then, through the device tool, from the repository root, carrying .whl:
#   bash benchmarks/device_ablation.sh                       (timeout_s 600)
# SMOKE=1 DEVICE=cpu bash benchmarks/device_ablation.sh checks the whole script here in about 3 minutes (micro
# datasets, two seeds, a few iterations; the numbers mean nothing).
#
# What it does: installs otavatar (editable, offline) and lmdb; renders the three SynthHeads sets of
# docs/training.md on the GPU (`otavatar synth --device cuda`: the same datasets, float rounding aside); trains
# SEEDS x (successive, joint) controllers side by side on the GPU for MINUTES each with RECIPE; scores (a), (b)
# and (c) on the three test splits; tests across seeds (`otavatar train ablation`); copies summary.md,
# summary.json, a tarball of the reports, logs and training metrics, and the successive runs' EMA weights to
# $OUT. Rerun on the same warm machine, it resumes: finished jobs are skipped, stopped runs continue.
set -euo pipefail
MINUTES=${MINUTES:-4}
SEEDS=${SEEDS:-0,1,2}
JOBS=${JOBS:-6}                 # training runs side by side: SEEDS x 2 schedules at once
EVAL_JOBS=${EVAL_JOBS:-7}       # 3 sets x (6 models + the shared static identity) = 21 evaluations, 3 rounds
THREADS=${THREADS:-2}           # torch threads per job: 16 cores over 7 evaluations at a time
WORK=${WORK:-out/device-ablation}
OUT=${OUT:-$WORK/returned}
# Round 20's recipe (docs/training-rounds.md) at the published per-GPU batch of 8 videos.
RECIPE=${RECIPE:-"--fresh-controller --batch 8 --inversion-steps 3 --controller-steps 1 --sr-steps 1 --lr-code 0.02
  --sr-perceptual-size 32 --density-points 500 --iterations 100000 --persistent-codes --pin-mean-motion 512
  --warmup-code-steps 16 --lr-controller 1e-3 --freeze-generator --no-controller-pose --differential-grad
  --basis-init-scale 0.05"}
DEVICE=${DEVICE:-cuda}
SYNTH=(40 80 48)                # training subjects, held-out subjects, frames per video (docs/training.md)
EVAL_ARGS=${EVAL_ARGS:-"--steps 30 30 --videos-per-subject 2"}   # add --no-intrinsics: round 26
if [ "${SMOKE:-0}" = 1 ]; then
  MINUTES=0.3 SEEDS=0,1 JOBS=2 EVAL_JOBS=2 WORK=out/device-ablation-smoke OUT=out/device-ablation-smoke/returned
  SYNTH=(3 3 4) EVAL_ARGS="--steps 1 1 --frames 2"
  RECIPE="--fresh-controller --batch 1 --inversion-steps 2 --controller-steps 1 --sr-steps 1 --iterations 2
    --density-points 64 --sr-perceptual-size 16 --identity-encoder none"
fi
export PYTHONUNBUFFERED=1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import lmdb" || { echo "lmdb is missing: download its wheel into .whl (see this script's header)"; exit 2; }
python3 -c "import otavatar" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
mkdir -p "$WORK/data" "$OUT"

start=$(date +%s)
synth() {   # NAME SUBJECTS SEED
  [ -f "$WORK/data/$1/truth.npz" ] || python3 -m otavatar.cli synth --out "$WORK/data/$1" --subjects "$2" \
      --videos-per-subject 2 --frames "${SYNTH[2]}" --resolution 128 --seed "$3" --device "$DEVICE" --quiet
}
pids=()
synth synth "${SYNTH[0]}" 0 & pids+=($!)
synth heldout-s1 "${SYNTH[1]}" 1 & pids+=($!)
synth heldout-s2 "${SYNTH[1]}" 2 & pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done
echo "datasets: $(( $(date +%s) - start )) s"

# shellcheck disable=SC2086  # RECIPE is a list of options
python3 -m otavatar.cli train ablation --data "$WORK/data/synth" --heldout "$WORK/data/heldout-s1" \
    --heldout "$WORK/data/heldout-s2" --prior sdk/weights/default/otavatar-tiny.safetensors --out "$WORK/round" \
    --seeds "$SEEDS" --max-minutes "$MINUTES" --jobs "$JOBS" --eval-jobs "$EVAL_JOBS" --threads "$THREADS" \
    --device "$DEVICE" --eval-args "$EVAL_ARGS" -- $RECIPE \
    | tee "$WORK/ablation.log"
echo "total: $(( $(date +%s) - start )) s"

cp "$WORK/round/summary.md" "$WORK/round/summary.json" "$OUT/"
tar czf "$OUT/round.tgz" -C "$WORK/round" reports logs done plan.json \
    $(cd "$WORK/round" && ls runs/*/metrics.jsonl runs/*/state.json runs/*/config.json)
for run in "$WORK"/round/runs/successive-s*; do cp "$run/ema.safetensors" "$OUT/$(basename "$run").safetensors"; done
