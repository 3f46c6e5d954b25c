#!/usr/bin/env bash
# The GPU figures of the README, in one short run (about 10 minutes on one H200, an estimate): the benchmark with and
# without device-resident data, a 10-epoch from-scratch run of `full`, then `--recipe fast` for 30 epochs at batch
# 512 (Keller Jordan's ResNet-18 baseline reaches 94% in 26 epochs: the target), then the transfer study at the
# tutorial's scale (every image of the five target classes, stages of 5, 15 and 30 epochs, pretraining at 64 px for
# 30 epochs: about 15 more minutes, an estimate; it reuses finished rows when run again). Needs the CIFAR-10 copy at
# ../shared/datasets/cifar10.
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
/usr/bin/time -v python scripts/finetune.py --dataset_name "$data" --recipe fast --num_train_epochs 30 \
    --augment crop-flip --per_device_train_batch_size 512 --learning_rate 0.2 --output_dir "$out/fast30" \
    --save_strategy no --logging_steps 20 2>&1 | tail -60 > "$out/fast30.log"
cp "$out/fast30/all_results.json" "$out/fast30_results.json" 2>/dev/null || true
python scripts/compare_runs.py "$out/scratch10=full" "$out/fast30=fast" --plot "$out/accuracy_vs_time.png" \
    | tee "$out/accuracy_vs_time.md"
python scripts/transfer_study.py --dataset_name "$data" --output_dir "$out/transfer_study" --train_per_class 0 \
    --eval_samples 2500 --stage_epochs 5,15,30 --pretrain_epochs 30 \
    --finetune_args "--per_device_train_batch_size 256 --save_strategy no --logging_steps 20" \
    2>&1 | grep -v "it/s]" | tail -40 > "$out/transfer_study.log"
cp "$out/transfer_study/results.md" "$out/transfer_study_results.md" 2>/dev/null || true
