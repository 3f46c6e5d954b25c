#!/usr/bin/env bash
# The GPU figures of the README, in one short run (about 6 minutes on one H200): the benchmark with and without
# device-resident data, then a 10-epoch from-scratch run. Needs the CIFAR-10 copy at ../shared/datasets/cifar10.
# Usage: bash scripts/gpu_check.sh OUT_DIR
set -euo pipefail
out="${1:-gpu_check}"
mkdir -p "$out"
data=../shared/datasets/cifar10
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python scripts/benchmark.py --dataset_name "$data" --steps 200 --warmup 20 --eval_images 5000 \
    --data_on_device false --json "$out/bench_dataloader.json" | tee "$out/bench_dataloader.txt"
python scripts/benchmark.py --dataset_name "$data" --steps 200 --warmup 20 --eval_images 5000 \
    --data_on_device true --json "$out/bench_device.json" | tee "$out/bench_device.txt"
python scripts/benchmark.py --dataset_name "$data" --steps 100 --warmup 30 --eval_images 5000 \
    --data_on_device true --batch_size 512 --torch_compile true \
    --json "$out/bench_device_b512_compile.json" | tee "$out/bench_device_b512_compile.txt"
/usr/bin/time -v python scripts/finetune.py --dataset_name "$data" --recipe full --num_train_epochs 10 \
    --backbone_weights none --per_device_train_batch_size 512 --scale_lr_with_batch true \
    --output_dir "$out/scratch10" --save_strategy no --logging_steps 20 2>&1 | tail -60 > "$out/scratch10.log"
cp "$out/scratch10/all_results.json" "$out/scratch10/README.md" "$out/" 2>/dev/null || true
