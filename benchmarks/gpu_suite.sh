#!/usr/bin/env bash
# Every GPU measurement of the performance issue in one command (for the device tool):
#   bash benchmarks/gpu_suite.sh            # writes JSON under ${OUT:-benchmarks/results}
# Needs jax[cuda], flax, optax, orbax, torch, torchvision, timm, pretrainedmodels;
# ml_collections and tensorflow_datasets come from ../shared/device/stage.sh's wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
run() { python benchmarks/throughput.py --peak-tflops 989 "$@"; }
run --model googlenet --batch-size 256 --json "$out/googlenet_b256.json"
run --model inception_v3 --batch-size 128 --json "$out/inception_v3_b128.json"
run --model inception_cifar --batch-size 128 --json "$out/cifar_b128.json"
run --model inception_cifar --batch-size 1024 --json "$out/cifar_b1024.json"
