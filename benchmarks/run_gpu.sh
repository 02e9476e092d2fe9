#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md, in one go: writes JSON to DIR.
#   bash benchmarks/run_gpu.sh DIR
set -u
out=${1:-/tmp/adain_kd_bench}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/device.txt" 2>&1
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" >> "$out/device.txt" 2>&1
cat "$out/device.txt"
common="--teacher=wrn_40_2 --student=wrn_16_2 --methods=none,kd,adain --points=2,3 --steps=20 --warmup=3 --steps_per_call=16"
for dtype in float32 bfloat16; do
  python3 benchmarks/step_throughput.py $common --batch_sizes=64,512 --dtype=$dtype --out="$out/wrn_$dtype.json" > /dev/null
done
ls -la "$out"
