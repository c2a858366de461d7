#!/usr/bin/env bash
# shellcheck disable=SC2317  # (save_results runs from the EXIT trap)
# Issue 6's CIFAR-10 reproduction on a GPU machine: SimpleNet at width 64 with re-parameterized
# GroupNorm and the reference's initialisation (Kaiming normal, zero biases), 8-bit; per-layer (the
# reference's "normal" row), clipping 0.1, clipping + RandBET 0.1% and 1%; hold-out protocol; RErr at 0.1% and 1% over PATTERNS
# patterns on the first 9000 test images (the reference's protocol, on batch 5 here).
#
# On this side: scripts/stage_gpu_deps.sh and scripts/stage_cifar10.sh; then carry .stage-deps and
# .stage-cifar-a in a first call that builds with `scripts/gpu_check.sh tests` (build-gpu), and
# .stage-cifar-b in a second while the machine is held (64 MiB upload limit per call), running e.g.
#   BUDGET_S=420 EPOCHS=30 MODELS="perlayer8 clip" scripts/gpu_cifar10.sh
# stops every step in time (exit 3) and resumes from checkpoints when called again while the machine
# is held. EPOCHS is fixed by a model's first run (its learning-rate schedule depends on it; a
# checkpoint refuses another value). Work: runs/gpu-cifar10. When the device tool's OUT is set, the
# script leaves there on exit: cifar10.log (one progress line per epoch), results.tar.gz (all JSON)
# and the newest unfinished checkpoint split into 15 MiB parts (NAME.pt.ckpt.part-aa, -ab, ...: files
# over 16 MiB do not come back; a trained model not yet evaluated counts as unfinished too). To
# continue in a later session, put those parts and results.tar.gz in .stage-ckpt and carry it in a
# call of its own (with the CIFAR-10 staging it would pass the 64 MiB upload limit): they are joined
# and unpacked into runs/gpu-cifar10 (never over newer files) before any work.
set -euo pipefail
# BUDGET_S counts from here: unpacking and the torch import come out of it, not on top of it.
SCRIPT_START=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# Checked first: on a fresh machine (the earlier call's was given back) nothing else here can help.
[[ -x build-gpu/bitrobust ]] || {
  echo "gpu_cifar10: build-gpu/bitrobust missing: this machine has not run scripts/gpu_check.sh (a fresh machine:" \
    "the earlier call's was given back); run that call, with .stage-deps and .stage-cifar-a, again first" >&2
  exit 1
}
DATA=$ROOT/.stage-data/cifar10
SUMS=$ROOT/.stage-cifar-a/SHA256SUMS
mkdir -p "$DATA"
# The five training batches, from the two halves of stage_cifar10.sh's archive; unpacked once per
# machine (python3's lzma: the machine may have no xz), then checked.
if ! [[ -f $SUMS ]] || ! (cd "$DATA" && sha256sum --quiet -c "$SUMS" >/dev/null 2>&1); then
  parts=("$ROOT"/.stage-cifar-a/train.tar.xz.part-* "$ROOT"/.stage-cifar-b/train.tar.xz.part-*)
  [[ -f $SUMS && -e ${parts[0]} && -e ${parts[1]:-} ]] ||
    { echo "gpu_cifar10: CIFAR-10 is not staged (scripts/stage_cifar10.sh, then carry .stage-cifar-a and -b)" >&2; exit 1; }
  cat "${parts[@]}" | python3 -c '
import sys, tarfile
archive = tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz")
archive.extractall(sys.argv[1], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))' "$DATA"
  (cd "$DATA" && sha256sum --quiet -c "$SUMS") || { echo "gpu_cifar10: unpacked batches fail their sha256" >&2; exit 1; }
  echo "gpu_cifar10: CIFAR-10 training batches unpacked into $DATA"
fi
[[ -f $ROOT/.stage-cifar-c/test_batch_jpeg.bin.gz ]] && ln -sf "$ROOT/.stage-cifar-c/test_batch_jpeg.bin.gz" "$DATA/"
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export LD_LIBRARY_PATH=$ROOT/.stage-deps/lib/x86_64-linux-gnu:$TORCH_LIB:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name --format=csv,noheader
# RUN_SUITE=1: first the reference's 13 x 50 x 9000 suite (issue 7's <= 60 s), which
# `gpu_check.sh bench` skips when its budget is short; within BUDGET_S, at most SUITE_LIMIT_S.
if [[ ${RUN_SUITE:-0} == 1 ]]; then
  suite_out=${OUT:-$ROOT/runs/gpu-cifar10}
  mkdir -p "$suite_out"
  BITROBUST_BENCH_FULL_SUITE=1 timeout -k 5 "${SUITE_LIMIT_S:-100}" build-gpu/bench_end_to_end \
    --benchmark_filter=BM_ReferenceSuite --benchmark_out="$suite_out/suite.json" --benchmark_out_format=json ||
    echo "gpu_cifar10: the suite did not finish (exit $?)"
  python3 scripts/bench_table.py "$suite_out/suite.json" || true
fi
export BITROBUST_BIN=$ROOT/build-gpu/bitrobust RUN_DIR=${RUN_DIR:-$ROOT/runs/gpu-cifar10} DATA_ROOT=$ROOT/.stage-data
export WIDTH=${WIDTH:-64} NORM=regn INIT=reference DEVICE=${DEVICE:-cuda} LIMIT=${LIMIT:-9000} RATES=${RATES:-0.1%,1%}
export EPOCHS=${EPOCHS:-250} PATTERNS=${PATTERNS:-50} QUIET=${QUIET:-0}
export MODELS=${MODELS:-perlayer8 clip clip_randbet0.1 clip_randbet1}
export PRECISIONS=${PRECISIONS-fp32 bf16}  # (issue 7: RErr at each precision against fp32's interval)
if [[ -n ${BUDGET_S:-} ]]; then
  DEADLINE=$((SCRIPT_START + BUDGET_S))
  export DEADLINE
fi
mkdir -p "$RUN_DIR"
# Checkpoints brought from an earlier session (see above): joined, never over a newer one.
if [[ -d .stage-ckpt ]]; then
  [[ -f .stage-ckpt/results.tar.gz ]] && tar xzf .stage-ckpt/results.tar.gz -C "$RUN_DIR" --skip-old-files
  for first in .stage-ckpt/*.part-aa; do
    [[ -e $first ]] || continue
    file=$(basename "${first%.part-aa}")
    if [[ ! -e $RUN_DIR/$file ]]; then
      cat "${first%-aa}"-* >"$RUN_DIR/$file.joining" && mv "$RUN_DIR/$file.joining" "$RUN_DIR/$file"
      echo "gpu_cifar10: $file ($(stat -c %s "$RUN_DIR/$file") bytes) from .stage-ckpt"
    fi
  done
fi

# What the device tool brings back (at most 8 files of 16 MiB): the JSON, the log, one checkpoint.
save_results() {
  set +e  # (an exit trap that stops at its first failure would keep the rest from coming back)
  [[ -n ${OUT:-} && -d ${OUT:-} ]] || return 0
  if compgen -G "$RUN_DIR/*.json" >/dev/null; then (cd "$RUN_DIR" && tar czf "$OUT/results.tar.gz" ./*.json); fi
  # The newest piece of unfinished work: a checkpoint of a model still training, or a trained
  # model not yet evaluated.
  local newest="" file
  for file in "$RUN_DIR"/*.pt.ckpt "$RUN_DIR"/*.pt; do
    [[ -e $file ]] || continue
    [[ $file == *.ckpt && -e ${file%.ckpt} ]] && continue
    if [[ $file == *.pt ]]; then  # finished once evaluated at every precision asked for
      local evaluated=1 p
      [[ -e ${file%.pt}.eval.json ]] || evaluated=0
      for p in $PRECISIONS; do [[ -e ${file%.pt}.eval_$p.json ]] || evaluated=0; done
      ((evaluated)) && continue
    fi
    if [[ -z $newest || $file -nt $newest ]]; then newest=$file; fi
  done
  if [[ -n $newest ]]; then split -b 15M "$newest" "$OUT/$(basename "$newest").part-"; fi
  ls -l "$OUT"
}
trap save_results EXIT
set -o pipefail
rc=0
bash scripts/experiments_cifar10.sh 2>&1 | tee -a "${OUT:-$RUN_DIR}/cifar10.log" || rc=$?
exit "$rc"
