#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks.md, in order of priority, inside one time
# budget, for a GPU machine lent for a few minutes at a time: the suite cannot assume
# it finishes, so each case that did finish leaves its JSON.
#
#   bash benchmarks/gpu_suite.sh                          # all cases, SUITE_BUDGET_S=540
#   bash benchmarks/gpu_suite.sh tta_cold cifar_b1024     # a later call: the cases left over
#
# Packages the GPU machine lacks (tensorflow_datasets, array_record, grain,
# ml_collections) can be given as wheels in .device-carry/wheels, and the tfds data
# directory in .device-carry/tfds (or DATA_DIR).
#
# Cases, run in this order (default: all of them):
#   cifar_b128 googlenet_b256 inception_v3_b128   throughput.py: inception_jax beside PyTorch
#                                                 eager and torch.compile, compile times
#   tta_cold                                      configs/cifar10_fast.py to 94%, cold cache
#   cifar_b1024                                   throughput.py at batch 1024
#   tta_warm                                      the same again with tta_cold's cache
# Results under ${OUT:-benchmarks/results}: <case>.json and suite.log (at most 8
# files). The last lines printed say, per case, ok / failed / timeout / skipped and
# its seconds.
#
# Environment:
#   SUITE_BUDGET_S    seconds for the whole suite (default 540). A case runs with what is
#                     left and is interrupted at the budget (SIGINT; killed 30 s later, so
#                     540 + 30 s fit a 600 s call); the benchmark scripts then write what
#                     they measured so far.
#   SUITE_MIN_CASE_S  a case that would get fewer seconds than this is skipped (default 60)
#   SUITE_DRY_RUN=1   print each case's command, run nothing
#   SUITE_PYTHON      the interpreter (default python3)
#   SUITE_EXTRA_THROUGHPUT, SUITE_EXTRA_TTA   arguments appended to those commands, for a
#                     rehearsal on CPU (e.g. "--steps 1 --warmup 0 --batch-size 4")
#   DATA_DIR          the tfds directory (default .device-carry/tfds)
#   SUITE_WHEELS=0    do not install .device-carry/wheels (they are for the GPU machine's Python)
# The timm/pretrainedmodels references are skipped where those are not installed.
set -uo pipefail
cd "$(dirname "$0")/.."

ALL_CASES=(cifar_b128 googlenet_b256 inception_v3_b128 tta_cold cifar_b1024 tta_warm)
budget=${SUITE_BUDGET_S:-540}
min_case=${SUITE_MIN_CASE_S:-60}
dry=${SUITE_DRY_RUN:-0}
py=${SUITE_PYTHON:-python3}
out="${OUT:-benchmarks/results}"
data="${DATA_DIR:-.device-carry/tfds}"
cache=/tmp/inception_jax_tta_cache
read -ra extra_tp <<< "${SUITE_EXTRA_THROUGHPUT:-}"
read -ra extra_tta <<< "${SUITE_EXTRA_TTA:-}"

cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=("${ALL_CASES[@]}")
for c in "${cases[@]}"; do
  if [[ " ${ALL_CASES[*]} " != *" $c "* ]]; then
    echo "gpu_suite.sh: unknown case '$c'; expected some of: ${ALL_CASES[*]}" >&2
    exit 2
  fi
done
for n in "$budget" "$min_case"; do
  if ! [[ "$n" =~ ^[0-9]+$ ]]; then
    echo "gpu_suite.sh: SUITE_BUDGET_S and SUITE_MIN_CASE_S must be whole seconds, got '$n'" >&2
    exit 2
  fi
done

# CMD: the command of case $1
set_cmd() {
  local tp=("$py" benchmarks/throughput.py --peak-tflops 989)
  local tta=("$py" benchmarks/time_to_accuracy.py --config configs/cifar10_fast.py
    --data_dir "$data" --target 0.94 --warm-cache "$cache")
  case "$1" in
    cifar_b128) CMD=("${tp[@]}" --model inception_cifar --batch-size 128 "${extra_tp[@]}") ;;
    googlenet_b256) CMD=("${tp[@]}" --model googlenet --batch-size 256 "${extra_tp[@]}") ;;
    inception_v3_b128) CMD=("${tp[@]}" --model inception_v3 --batch-size 128 "${extra_tp[@]}") ;;
    cifar_b1024) CMD=("${tp[@]}" --model inception_cifar --batch-size 1024 "${extra_tp[@]}") ;;
    tta_cold | tta_warm) CMD=("${tta[@]}" "${extra_tta[@]}") ;;
  esac
  CMD+=(--json "$out/$1.json")
}

if [ "$dry" = 1 ]; then
  for c in "${cases[@]}"; do
    set_cmd "$c"
    echo "$c: ${CMD[*]}"
  done
  exit 0
fi

mkdir -p "$out"
exec > >(tee -a "$out/suite.log") 2>&1
export PYTHONUNBUFFERED=1
start=$(date +%s)
echo "gpu_suite.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC'), budget ${budget} s, cases: ${cases[*]}"
nvidia-smi -L 2> /dev/null || echo "(no nvidia-smi)"
if [ "${SUITE_WHEELS:-1}" = 1 ] && [ -d .device-carry/wheels ]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device-carry/wheels/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
if [[ " ${cases[*]} " == *" tta_cold "* ]]; then
  rm -rf "$cache" # cold means cold, also on a machine that ran the suite before
fi

summary=()
for c in "${cases[@]}"; do
  left=$((budget - ($(date +%s) - start)))
  reason=""
  if [ "$left" -lt "$min_case" ]; then
    reason="${left} s left of the budget"
  elif [[ "$c" == tta_* ]] && [ ! -d "$data/cifar10" ]; then
    reason="no CIFAR-10 at $data (put a prepared tfds cifar10 there or set DATA_DIR)"
  elif [ "$c" = tta_warm ] && [ -z "$(ls -A "$cache" 2> /dev/null)" ]; then
    reason="no compilation cache from tta_cold on this machine"
  fi
  if [ -n "$reason" ]; then
    echo "=== $c: skipped: $reason"
    summary+=("$(printf '%-18s %-8s %6s  %s' "$c" skipped - "$reason")")
    continue
  fi
  set_cmd "$c"
  echo "=== $c (up to ${left} s): ${CMD[*]}"
  t0=$(date +%s)
  timeout --signal=INT --kill-after=30 "$left" "${CMD[@]}"
  rc=$?
  secs=$(($(date +%s) - t0))
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status="failed($rc)" ;;
  esac
  json="$out/$c.json"
  [ -f "$json" ] || json="(no JSON)"
  echo "=== $c: $status after ${secs} s"
  summary+=("$(printf '%-18s %-8s %6s  %s' "$c" "$status" "$secs" "$json")")
done

echo "=== summary ($(($(date +%s) - start)) s of ${budget} s)"
printf '%s\n' "${summary[@]}"
