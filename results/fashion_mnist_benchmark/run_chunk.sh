#!/usr/bin/env bash
# One chunk of the benchmark on one accelerator (about 10 minutes):
#   bash results/fashion_mnist_benchmark/run_chunk.sh OUT_DIR [MINUTES] [campaign flags...]
# Trains what is unfinished in plan.py (finished runs are committed and
# skipped), 14 runs at once, and packs the results into OUT_DIR/chunk.tar.gz;
# unpack it in the repository root and commit. Fashion-MNIST is read from
# $ADAIN_KD_DATA_DIR (default: ./data, holding fashion-mnist/*.gz).
set -uo pipefail
out=${1:?usage: run_chunk.sh OUT_DIR [MINUTES] [campaign flags...]}
minutes=${2:-8.5}
shift; shift || true
cd "$(dirname "$0")/../.."
export ADAIN_KD_DATA_DIR=${ADAIN_KD_DATA_DIR:-$PWD/data} PYTHONUNBUFFERED=1
mkdir -p "$out"
python3 -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())' 2>&1 | tee "$out/versions.txt"
python3 -m adain_kd_jax.experiments.campaign \
  --plan=results/fashion_mnist_benchmark/plan.py \
  --workdir=results/fashion_mnist_benchmark/runs \
  --parallel=14 --minutes="$minutes" --tail_minutes=2.5 \
  --set=device_data=True,steps_per_call=16 \
  --archive="$out/chunk.tar.gz" "$@" 2>&1 | tee "$out/campaign.log"
