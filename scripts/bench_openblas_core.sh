#!/usr/bin/env bash
# NOTE [OpenBLAS core] measured: where OpenBLAS does not know this CPU and bitrobust chose its
# kernels at start, training (MLP, LeNet) and a LeNet sweep with those kernels against OpenBLAS's own
# choice (OPENBLAS_CORETYPE set to it), alternating, in one run. Prints nothing to compare where
# OpenBLAS knew the CPU.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITROBUST_BIN:-$ROOT/build/bitrobust}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-150}
unset OPENBLAS_CORETYPE
version=$("$BIN" --version)
echo "$version"
own=$(sed -n 's/.*where OpenBLAS took this CPU for a \([A-Za-z0-9]*\)).*/\1/p' <<<"$version")
if [ -z "$own" ]; then
  echo "OpenBLAS chose kernels for this CPU itself: nothing to compare"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# (the header lines train prints even with --quiet go to a log, shown if a command fails)
run() { "$@" >/dev/null 2>"$tmp/log" || { cat "$tmp/log"; exit 1; }; }
run "$BIN" train --dataset fashion-mnist --model lenet --norm regn --scheme rquant --bits 8 --clip 0.1 --epochs 1 \
  --max-steps 200 --quiet --out "$tmp/sweep.pt"
field() { python3 -c "import json,sys;j=json.load(open(sys.argv[1]));print(eval(sys.argv[2]))" "$@"; }
for round in $(seq "$ROUNDS"); do
  for kernels in chosen "$own"; do
    env=()
    [ "$kernels" = chosen ] || env=(OPENBLAS_CORETYPE="$kernels")
    for model in mlp lenet; do
      run env "${env[@]}" "$BIN" train --dataset fashion-mnist --model "$model" --norm regn --max-steps "$STEPS" \
        --quiet --out "$tmp/$model.pt" --json "$tmp/$model.json"
      echo "round $round, $kernels kernels: train $model $(field "$tmp/$model.json" \
        "round(j['train_steady_images_per_second'])") images/s, final loss $(field "$tmp/$model.json" "j['final_train_loss']")"
    done
    run env "${env[@]}" "$BIN" eval --model "$tmp/sweep.pt" --rates 0.1%,1% --patterns 10 --limit 3000 --quiet \
      --json "$tmp/eval.json"
    echo "round $round, $kernels kernels: eval lenet $(field "$tmp/eval.json" \
      "round(j['timings']['images_patterns_per_second'])") images x patterns/s, RErr $(field "$tmp/eval.json" \
      "[r['rerr_mean'] for r in j['results']]")"
  done
done
