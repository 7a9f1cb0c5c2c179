#!/usr/bin/env bash
# Every GPU measurement of the performance issue in one command (for the device tool):
#   ../shared/device/stage.sh --data      # here: wheels + the CIFAR-10 copy into .device-carry/
#   bash benchmarks/gpu_suite.sh          # there (carry .device-carry); JSON under ${OUT:-benchmarks/results}
# The GPU machine has jax[cuda], flax, optax, orbax, torch, torchvision; the staged wheels add
# tensorflow_datasets, array_record and ml_collections (timm/pretrainedmodels refs are skipped
# when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .device-carry/wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device-carry/wheels/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
data="${DATA_DIR:-.device-carry/tfds}"
run() { python3 benchmarks/throughput.py --peak-tflops 989 "$@"; }
# time to accuracy first (cold compilation cache), then once more with a warm cache
python3 benchmarks/time_to_accuracy.py --config configs/cifar10_fast.py --data_dir "$data" \
  --warm-cache /tmp/xla_tta --json "$out/tta_cold.json" | tail -n 25
python3 benchmarks/time_to_accuracy.py --config configs/cifar10_fast.py --data_dir "$data" \
  --warm-cache /tmp/xla_tta --json "$out/tta_warm.json" | tail -n 3
run --model inception_cifar --batch-size 128 --json "$out/cifar_b128.json"
run --model inception_cifar --batch-size 1024 --json "$out/cifar_b1024.json"
run --model googlenet --batch-size 256 --json "$out/googlenet_b256.json"
run --model inception_v3 --batch-size 128 --json "$out/inception_v3_b128.json"
