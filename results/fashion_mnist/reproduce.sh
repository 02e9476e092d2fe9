#!/usr/bin/env bash
# The reduced-scale reproduction on the embedded default data (Fashion-MNIST,
# committed resnet20 teacher, resnet8 student), sized for a 2-core CPU.
#   bash results/fashion_mnist/reproduce.sh [WORKDIR]   (default runs/repro)
# 1. Tunes AdaIN's loss weight and insertion point on a validation split of
#    5,000 examples held out of the training set (seed 0, 1 epoch).
# 2. Runs none, kd, stat_l2, adain, adain_kd with the chosen values, 3 seeds,
#    1 epoch, the same held-out split (so "best" is chosen on val, not test).
# 3. Writes the report and plots. Finished runs are skipped when re-run.
set -euo pipefail
cd "$(dirname "$0")/../.."
w=${1:-runs/repro}
common=(--config=configs/default.py --config.holdout=5000 --config.compare_to=
        --config.eval_every_epochs=0.5)
for weight in 0.03 0.1 0.3; do
  for point in 2 3; do
    python -m adain_kd_jax.experiments.sweep "${common[@]}" --methods=adain --seeds=0 \
      --config.num_epochs=1 --config.loss.adain=$weight \
      "--config.points=($point,)" --workdir="$w/tune/w${weight}_p${point}"
  done
done
# The best validation accuracy at the end of the tuning run wins.
read -r weight point < <(python - "$w/tune" <<'PY'
import glob, json, os, sys
best = max((json.load(open(p))['val_accuracy'], p) for p in
           glob.glob(os.path.join(sys.argv[1], '*', 'adain', 'seed0', 'summary.json')))
tag = best[1].split(os.sep)[-4]  # w<weight>_p<point>
print(tag[1:tag.index('_p')], tag[tag.index('_p') + 2:])
PY
)
echo "Chosen on val: loss.adain=$weight, points=($point,)"
python -m adain_kd_jax.experiments.sweep "${common[@]}" \
  --methods=none,kd,stat_l2,adain,adain_kd --seeds=0,1,2 \
  --config.num_epochs=1 --config.loss.adain=$weight \
  "--config.points=($point,)" --workdir="$w/grid"
python -m adain_kd_jax.experiments.report "$w/grid"
for d in "$w"/tune/*/; do python -m adain_kd_jax.experiments.report --nostats --notensorboard "$d"; done
