#!/usr/bin/env bash
# Codec v2 (`codec_cc`) training run: one long run, resumed from its checkpoint every time it starts.
#
#   AEC_DATASETS=../shared/datasets training/recipes/codec_v2.sh            # train (background: nohup ... &)
#   training/recipes/codec_v2.sh snapshot                                    # weights into snapshots/ (git)
#   CKPT=artifacts/ckpt/codec-v2-res SYNTHESIS_RESIDUAL='[2, 1, 0]' training/recipes/codec_v2.sh [snapshot]  # a branch
#
# A checkout without artifacts/ckpt/codec-v2 starts from the committed snapshot (training.snapshot),
# else from natural version 8 (warm start: ChannelCodec.adopt). models_store/README.md has the story.
# The learning rate drops to LR/10 at step LR_DECAY: first at 22,400 (the curve was flat at 1e-4 from 19,600
# on). Steps 0-27,200 ran with LR=1e-4 LR_DECAY=22400 and the levels unweighted (LEVEL_WEIGHT_EXPONENT=);
# 27,200-102,800 with LR=3e-4 LR_DECAY=22400 (3e-5), LEVEL_WEIGHT_EXPONENT=0.5 (the levels' losses
# rebalanced: RateLevels.level_weights) and half of Urban100 added (the other half, [1::2], stays held out).
# From step 36,400 on the transforms' inner convolutions compute in bfloat16 (MIXED_PRECISION=bfloat16, the
# default on a CPU with bfloat16 instructions; MIXED_PRECISION= for float32): 1.3x the steps there, same checkpoint layout.
# From step 39,600 on the checkpoint also keeps an average of the weights (EMA_DECAY=0.9995, the default;
# EMA_DECAY= for none), which an export takes; `bench/checkpoint_rd.py --average` measures it.
# From step 81,600 on the model has the level-conditional synthesis ("level_synthesis": true; a branch
# started at step 72,800 from zero tables, ~1% fewer bits on the average at every level by 81,600, took
# over the run). PLAIN_SYNTHESIS=1 gives the model without it (e.g. for a checkpoint of step 81,600 or
# before: artifacts/ckpt/codec-v2-plain).
# From step 102,800 on: a second drop, to 3e-6 (LR=3e-5 LR_DECAY=102800, the defaults now; the curve had
# flattened at 3e-5: +0.06-0.09 dB per level from step 82,000 to 102,000), and float32 where the CPU has no
# bfloat16 instructions (below: emulated bfloat16 ran 0.23 steps/s on an AVX2-only AMD EPYC).
# A branch of the run: CKPT=<its own folder> (seeded with a copy of the run's checkpoint files, or, when
# empty, from the snapshot) and other settings.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${AEC_DATASETS:-../shared/datasets}
N=$DATA/natural
C=$DATA/cats
PY=${PYTHON:-.venv/bin/python}
CKPT=${CKPT:-artifacts/ckpt/codec-v2}
SNAPSHOT=snapshots/codec-v2
# a branch keeps its own snapshot, snapshots/<its CKPT folder's name> (e.g. snapshots/codec-v2-res)
OWN_SNAPSHOT=$SNAPSHOT
[[ "$CKPT" != artifacts/ckpt/codec-v2 ]] && OWN_SNAPSHOT=snapshots/$(basename "$CKPT")
ARGS='{"num_filters": 96, "latent_channels": 192, "hyper_channels": 64, "lmbdas": [0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048]'
if [[ -z "${PLAIN_SYNTHESIS:-}" ]]; then  # the main line since step 81,600 (a branch of step 72,800 that won)
  ARGS="$ARGS"', "level_synthesis": true'
fi
ARGS="$ARGS}"
LEVEL_WEIGHT_EXPONENT=${LEVEL_WEIGHT_EXPONENT-0.5}
if [[ -n "$LEVEL_WEIGHT_EXPONENT" ]]; then
  ARGS="${ARGS%\}}, \"level_weight_exponent\": $LEVEL_WEIGHT_EXPONENT}"
fi

# Branches of another shape (their empty CKPT folder is seeded from the snapshot, the new weights at their
# zero start): CHECKERBOARD=1 the checkerboard context; SYNTHESIS_RESIDUAL='[2, 1, 0]' residual blocks after
# g_s's inverse GDNs (identity at the start).
SHAPE=()
[[ -n "${CHECKERBOARD:-}" ]] && SHAPE+=('"checkerboard": true')
[[ -n "${SYNTHESIS_RESIDUAL:-}" ]] && SHAPE+=('"synthesis_residual": '"$SYNTHESIS_RESIDUAL")
RESTORE_ARGS='{}'
if (( ${#SHAPE[@]} )); then
  if [[ "$CKPT" == artifacts/ckpt/codec-v2 ]]; then
    echo "CHECKERBOARD=1 and SYNTHESIS_RESIDUAL= make a branch: give it its own CKPT=" >&2
    exit 2
  fi
  joined=$(IFS=,; echo "${SHAPE[*]}")
  ARGS="${ARGS%\}}, $joined}"
  RESTORE_ARGS="{$joined}"
fi

TRAIN_FLAGS=()
# bfloat16 only where the CPU computes it natively (avx512_bf16 or amx_bf16); emulated it is slower than float32
if "$PY" -c 'import sys; from training.distribute import cpu_has_bfloat16; sys.exit(not cpu_has_bfloat16())' 2>/dev/null; then
  MIXED_PRECISION=${MIXED_PRECISION-bfloat16}
else
  MIXED_PRECISION=${MIXED_PRECISION-}
fi
if [[ -n "$MIXED_PRECISION" ]]; then
  TRAIN_FLAGS=(--mixed-precision "$MIXED_PRECISION")
fi
EMA_DECAY=${EMA_DECAY-0.9995}
if [[ -n "$EMA_DECAY" ]]; then
  TRAIN_FLAGS+=(--ema-decay "$EMA_DECAY")
fi

if [[ "${1:-}" == "snapshot" ]]; then
  exec "$PY" -m training.snapshot save "$CKPT" "$OWN_SNAPSHOT" --model codec_cc --model-args "$ARGS"
fi
if [[ ! -e $CKPT/checkpoint ]]; then
  if [[ -e $OWN_SNAPSHOT/snapshot.json ]]; then  # the run's (or the branch's) own weights
    "$PY" -m training.snapshot restore "$OWN_SNAPSHOT" "$CKPT"
  elif [[ -e $SNAPSHOT/snapshot.json ]]; then  # a new branch: the main run's, its new weights at their start
    "$PY" -m training.snapshot restore "$SNAPSHOT" "$CKPT" --model-args "$RESTORE_ARGS"
  fi
fi
# Every SNAPSHOT_EVERY_S seconds (default an hour; 0: never) the newest checkpoint's weights go into the
# tracked snapshot, so that a session that ends without committing still leaves them in the working tree.
if [[ "${SNAPSHOT_EVERY_S:-3600}" != 0 ]]; then
  # $$ is the training process after the exec below: the loop ends with it
  (while sleep "${SNAPSHOT_EVERY_S:-3600}" && kill -0 $$ 2>/dev/null; do
     nice -n 19 "$PY" -m training.snapshot save "$CKPT" "$OWN_SNAPSHOT" --model codec_cc --model-args "$ARGS" || true
   done) &
fi
exec nice -n 19 "$PY" -m training train --model codec_cc --model-args "$ARGS" \
  --dataset "folder:$N/CBSD68=3,$N/LIVE1=2,$N/Set14=1,$N/SunHays80=3,$N/Urban100[0::2]=2,$C/train=2" \
  --test-dataset "folder:$N/McMaster" --epochs "${EPOCHS:-400}" --steps-per-epoch 400 --batch-size 8 --crop 128 \
  --optimizer adam --optimizer-args '{"learning_rate": '"${LR:-3e-5}"', "global_clipnorm": 1.0}' --lr-decay "${LR_DECAY:-102800}" \
  "${TRAIN_FLAGS[@]}" --init-from models_store/natural/8 --checkpoint-dir "$CKPT" --name natural \
  --description "Learned image codec v2 for photos: channel-conditional entropy model, integer entropy parameters, variable rate" \
  --out artifacts/store_v2 --log-dir artifacts/runs --no-progress
