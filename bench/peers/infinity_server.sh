#!/usr/bin/env bash
# bench/peers/infinity_server.sh — serve embroker's SigLIP checkpoint with infinity-emb on
# 127.0.0.1 (the peer of bench/run-serving). Runs in the foreground until killed.
#
#   bench/peers/infinity_server.sh PYTHON CHECKPOINT PORT THREADS MODEL_DIR
#
# PYTHON is the infinity venv's (bench/peers/setup-venv infinity). MODEL_DIR (made once, then
# kept) receives the two-tower layout infinity-emb needs, with CHECKPOINT's vision weights
# (infinity_model.py says why). Model name on the API: "siglip"; images: POST /embeddings_image.
set -euo pipefail
py=$1 ckpt=$2 port=$3 threads=$4 model_dir=$5
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$model_dir/config.json" ] || "$py" "$here/infinity_model.py" "$ckpt" "$model_dir"
# PASSIVE: idle OpenMP threads sleep instead of spinning (see bench/run-serving)
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE INFINITY_ANONYMOUS_USAGE_STATS=0 \
       DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$(dirname "$py")/infinity_emb" v2 --model-id "$model_dir" --served-model-name siglip \
    --engine torch --device cpu --batch-size 32 --host 127.0.0.1 --port "$port" --no-model-warmup
