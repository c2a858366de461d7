#!/usr/bin/env bash
# CIFAR-10 SimpleNet experiments of issue 6 (docs/results.md): trains the models named in MODELS,
# evaluates each with PATTERNS bit error patterns (seeds 100...) at RATES on the first LIMIT test
# images, and prints a markdown table. Hold-out protocol (train on batches 1-4, test on batch 5).
#
# Defaults are the CPU stand-in (SimpleNet width 16, re-parameterized BatchNorm, 5 epochs): at width
# 16 the GroupNorm SimpleNet stays at chance level, see docs/results.md. The reference's setting is
# scripts/gpu_cifar10.sh (width 64, regn, its initialisation, on a GPU).
#
# Runs resume: a finished model or evaluation is skipped, training continues from its checkpoint,
# and with DEADLINE (a `date +%s` time) each step stops in time and the script exits 3, to be rerun.
# Models: perlayer8 (s8-sym-tensor-trunc: the reference's per-layer scheme, which its result tables
# call "normal"), normal8 (our `normal` preset of issue 3: a global range q = 1), clip (rquant8 +
# clipping 0.1), clip_randbet0.1, clip_randbet1, and the last two with the reference's curriculum
# (--randbet-curriculum reference): clip_randbet0.1_refcurr, clip_randbet1_refcurr.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BITROBUST_BIN:-$ROOT/build/bitrobust}
if [[ -n ${OUT:-} && -z ${RUN_DIR:-} ]]; then
  echo "experiments_cifar10: OUT is no longer read (the device tool sets it for its own files): set RUN_DIR" >&2
  exit 2
fi
RUN_DIR=${RUN_DIR:-$ROOT/runs/cifar10_cpu}
WIDTH=${WIDTH:-16}
NORM=${NORM:-rebn}
INIT=${INIT:-torch}
EPOCHS=${EPOCHS:-5}
SEED=${SEED:-1}  # training seed (initialisation, shuffling, augmentation, RandBET patterns); patterns are seeds 100...
PATTERNS=${PATTERNS:-20}
LIMIT=${LIMIT:-5000}
RATES=${RATES:-0.1%,1%,2.5%}
DEVICE=${DEVICE:-cpu}
DATA_ROOT=${DATA_ROOT:-}
DEADLINE=${DEADLINE:-}
QUIET=${QUIET:-1}  # 0: one progress line per training epoch (loss, error, images/s) on stderr
MODELS=${MODELS:-perlayer8 clip clip_randbet0.1 clip_randbet1}  # the reference's four rows; about 42 min on 2 cores
# Issue 7's precision check: each model evaluated again at these precisions (e.g. "fp32 bf16"), the
# same patterns; the table's end says whether the default precision's RErr and each other one lie
# inside the fp32 run's 95% interval.
PRECISIONS=${PRECISIONS:-}
mkdir -p "$RUN_DIR"
data=()
[[ -n $DATA_ROOT ]] && data=(--data-root "$DATA_ROOT")
quiet=()
[[ $QUIET == 1 ]] && quiet=(--quiet)

# Runs "$@" under the deadline, if any; exits 3 when the deadline is (nearly) reached.
within_deadline() {
  if [[ -z $DEADLINE ]]; then "$@"; return; fi
  local left=$((DEADLINE - $(date +%s)))
  if ((left < 20)); then echo "out of time before: $*" >&2; exit 3; fi
  local rc=0
  # (TERM, not INT: a command started in the background by a non-interactive shell ignores INT)
  timeout --signal=TERM -k 15 "$left" "$@" || rc=$?
  if ((rc == 124 || rc == 130 || rc == 137 || rc == 143)); then echo "stopped at the deadline (rerun to resume): $*" >&2; exit 3; fi
  return "$rc"
}

options_of() {  # model name -> training options
  case $1 in
    perlayer8) echo "--scheme s8-sym-tensor-trunc" ;;
    normal8) echo "--scheme normal --bits 8" ;;
    clip) echo "--scheme rquant --bits 8 --clip 0.1" ;;
    clip_randbet0.1) echo "--scheme rquant --bits 8 --clip 0.1 --randbet 0.1%" ;;
    clip_randbet1) echo "--scheme rquant --bits 8 --clip 0.1 --randbet 1%" ;;
    clip_randbet0.1_refcurr) echo "--scheme rquant --bits 8 --clip 0.1 --randbet 0.1% --randbet-curriculum reference" ;;
    clip_randbet1_refcurr) echo "--scheme rquant --bits 8 --clip 0.1 --randbet 1% --randbet-curriculum reference" ;;
    *) echo "unknown model '$1' (known: perlayer8 normal8 clip clip_randbet0.1 clip_randbet1" \
         "clip_randbet0.1_refcurr clip_randbet1_refcurr)" >&2; exit 2 ;;
  esac
}

# Each model is evaluated as soon as it is trained: a run stopped later leaves finished results,
# not trained models waiting for evaluation.
for name in $MODELS; do
  opts=$(options_of "$name")
  # (A model evaluated in an earlier session comes back as its JSON alone: gpu_cifar10.sh carries no
  # finished model files, and it is not trained again.)
  if [[ ! -f $RUN_DIR/$name.pt && ! -f $RUN_DIR/$name.eval.json ]]; then
    # shellcheck disable=SC2086
    within_deadline "$BIN" train --dataset cifar10 --cifar-protocol holdout "${data[@]}" --model simplenet \
      --width "$WIDTH" --norm "$NORM" --init "$INIT" --epochs "$EPOCHS" --seed "$SEED" --device "$DEVICE" --resume "${quiet[@]}" \
      --out "$RUN_DIR/$name.pt" --json "$RUN_DIR/$name.train.json" $opts
  fi
  [[ -f $RUN_DIR/$name.eval.json ]] || within_deadline "$BIN" eval --model "$RUN_DIR/$name.pt" --cifar-protocol holdout \
    "${data[@]}" --device "$DEVICE" --rates "$RATES" --patterns "$PATTERNS" --seed 100 --limit "$LIMIT" --quiet \
    --json "$RUN_DIR/$name.eval.json" >/dev/null
  for precision in $PRECISIONS; do
    # (A model that came back from an earlier session as its JSON alone has no file to evaluate.)
    [[ -f $RUN_DIR/$name.pt && ! -f $RUN_DIR/$name.eval_$precision.json ]] || continue
    within_deadline "$BIN" eval --model "$RUN_DIR/$name.pt" --cifar-protocol holdout "${data[@]}" --device "$DEVICE" \
      --precision "$precision" --rates "$RATES" --patterns "$PATTERNS" --seed 100 --limit "$LIMIT" --quiet \
      --json "$RUN_DIR/$name.eval_$precision.json" >/dev/null
  done
done
# shellcheck disable=SC2086
python3 - "$RUN_DIR" $MODELS <<'PY'
import json, os, sys
out, models = sys.argv[1], sys.argv[2:]
rows = [(n, json.load(open(os.path.join(out, n + ".train.json"))), json.load(open(os.path.join(out, n + ".eval.json"))))
        for n in models]
rates = [r["rate"] for r in rows[0][2]["results"]]
print("| model | test error % (10000) | clean % (eval subset) | " +
      " | ".join(f"RErr {100*p:g}% (mean ± std)" for p in rates) + " | train time s |")
print("|---|---|---|" + "---|" * len(rates) + "---|")
for n, t, e in rows:
    cells = " | ".join(f"{100*r['rerr_mean']:.2f} ± {100*r['rerr_std']:.2f}" for r in e["results"])
    # (null when a resumed run found nothing left to train: the time was in an earlier call)
    secs = "–" if t.get("train_seconds") is None else f"{t['train_seconds']:.0f}"
    print(f"| {n} ({e['scheme']}) | {100*t['test_error']:.2f} | {100*e['clean_error']:.2f} | {cells} | {secs} |")
for n, t, e in rows:
    path = os.path.join(out, n + ".eval_fp32.json")
    if not os.path.exists(path):
        continue
    fp32 = json.load(open(path))
    others = [e] + [json.load(open(os.path.join(out, f))) for f in sorted(os.listdir(out))
                    if f.startswith(n + ".eval_") and f.endswith(".json") and f != n + ".eval_fp32.json"]
    for other in others:
        for ra, rb in zip(fp32["results"], other["results"]):
            if ra["rerr_ci95"] is None:  # one pattern: no interval to lie inside
                print(f"precision {n} {other['precision']} at {100*ra['rate']:g}%: one pattern, no interval")
                continue
            lo, hi = ra["rerr_ci95"]
            inside = lo <= rb["rerr_mean"] <= hi
            print(f"precision {n} {other['precision']} at {100*ra['rate']:g}%: RErr {100*rb['rerr_mean']:.2f}, fp32 "
                  f"{100*ra['rerr_mean']:.2f} (95% {100*lo:.2f}-{100*hi:.2f}): {'inside' if inside else 'OUTSIDE'}")
PY
