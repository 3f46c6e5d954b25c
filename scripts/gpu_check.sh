#!/usr/bin/env bash
# The GPU figures of the README in one short run, sized for about 10 minutes on one H200 (an estimate: it has not
# run yet), ending on one summary table (summary.md):
#   - the benchmark at 32 px with and without device-resident data, in fp16 (forced: --fp16 true --bf16 false), at
#     batch 512 with torch.compile, and the photos' 224 px path with and without torch.compile;
#   - a 10-epoch from-scratch run of `full` (bf16) and the same 3 first epochs in fp16 with loss scaling;
#   - `--recipe fast` for 30 epochs at batch 512 (Keller Jordan's ResNet-18 baseline reaches 94% in 26 epochs);
#   - the staged recipe under 2-process DDP (on one GPU when only one is there: the gloo backend, as NCCL refuses two
#     ranks on one device).
# TRANSFER_STUDY=1 adds the transfer study at the tutorial's scale (about 15 more minutes, an estimate).
# Needs the CIFAR-10 copy at ../shared/datasets/cifar10 and the photos at ../shared/datasets/hymenoptera.
# Usage: bash scripts/gpu_check.sh OUT_DIR
set -euo pipefail
out="${1:-gpu_check}"
mkdir -p "$out"
data=../shared/datasets/cifar10
photos=../shared/datasets/hymenoptera
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
gpus=$(nvidia-smi -L | wc -l)

bench() {  # NAME, then benchmark flags
    local name=$1
    shift
    python scripts/benchmark.py "$@" --json "$out/bench_$name.json" 2>&1 | grep -v "it/s]" > "$out/bench_$name.txt" \
        || true  # a failed check is "failed" in the summary; the others still run
}
bench dataloader --dataset_name "$data" --steps 200 --warmup 20 --eval_images 5000 --data_on_device false \
    --profile_steps 5
bench device --dataset_name "$data" --steps 200 --warmup 20 --eval_images 5000 --data_on_device true
bench device_fp16 --dataset_name "$data" --steps 200 --warmup 20 --eval_images 5000 --data_on_device true \
    --fp16 true --bf16 false
bench device_b512_compile --dataset_name "$data" --steps 100 --warmup 30 --eval_images 5000 \
    --data_on_device true --batch_size 512 --torch_compile true
bench photos224 --train_dir "$photos/train" --batch_size 64 --steps 2 --warmup 1 --eval_images 32 --profile_steps 2
bench photos224_compile --train_dir "$photos/train" --batch_size 64 --steps 2 --warmup 1 --eval_images 32 \
    --torch_compile true

finetune() {  # NAME, then finetune flags; its log's tail and results kept
    local name=$1
    shift
    /usr/bin/time -v python scripts/finetune.py --dataset_name "$data" --output_dir "$out/$name" \
        --save_strategy no --logging_steps 20 "$@" 2>&1 | grep -v "it/s]" | tail -80 > "$out/$name.log" || true
    cp "$out/$name/all_results.json" "$out/${name}_results.json" 2>/dev/null || true
}
finetune scratch10 --recipe full --num_train_epochs 10 --backbone_weights none --per_device_train_batch_size 512 \
    --scale_lr_with_batch true
finetune scratch3_fp16 --recipe full --num_train_epochs 3 --backbone_weights none --per_device_train_batch_size 512 \
    --scale_lr_with_batch true --fp16 true --bf16 false
finetune fast30 --recipe fast --num_train_epochs 30 --augment crop-flip --per_device_train_batch_size 512 \
    --learning_rate 0.2
backend=$([ "$gpus" -ge 2 ] && echo nccl || echo gloo)
accelerate launch -q --multi_gpu --num_processes 2 scripts/finetune.py --dataset_name "$data" \
    --output_dir "$out/ddp2" --backbone_weights none --stage_epochs 1,1,1 --max_train_samples 20000 \
    --max_eval_samples 2000 --per_device_train_batch_size 256 --save_strategy no --logging_steps 20 \
    --ddp_backend "$backend" 2>&1 | grep -v "it/s]" | tail -60 > "$out/ddp2.log" || true
cp "$out/ddp2/all_results.json" "$out/ddp2_results.json" 2>/dev/null || true
python scripts/compare_runs.py "$out/scratch10=full" "$out/fast30=fast" --plot "$out/accuracy_vs_time.png" \
    > "$out/accuracy_vs_time.md" || true

if [ "${TRANSFER_STUDY:-0}" = 1 ]; then
    python scripts/transfer_study.py --dataset_name "$data" --output_dir "$out/transfer_study" --train_per_class 0 \
        --seeds 1 --stage_epochs 5,15,30 --pretrain_epochs 30 \
        --finetune_args "--per_device_train_batch_size 256 --save_strategy no --logging_steps 20" \
        2>&1 | grep -v "it/s]" | tail -40 > "$out/transfer_study.log"
    cp "$out/transfer_study/results.md" "$out/transfer_study_results.md" 2>/dev/null || true
fi

python - "$out" "$backend" <<'EOF' | tee "$out/summary.md"
"""One table of every check: what ran, its figure, and where its log is."""
import json
import sys
from pathlib import Path

out, backend = Path(sys.argv[1]), sys.argv[2]


def read(name):
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


print("| check | result | log |\n|---|---|---|")
for name in ("dataloader", "device", "device_fp16", "device_b512_compile", "photos224", "photos224_compile"):
    bench = read(f"bench_{name}.json")
    figure = "failed" if bench is None else (
        f"{bench['dtype']}, {bench['image_size']} px, batch {bench['batch_size']}: train step "
        f"{bench['step_img_s']:,.0f} img/s, trainer {bench['trainer_img_s']:,.0f} img/s "
        f"({bench['speedup_vs_plain']:.1f}x the plain loop), eval {bench['eval_img_s']:,.0f} img/s")
    print(f"| benchmark {name} | {figure} | bench_{name}.txt |")
for name, what in (("scratch10", "full, 10 epochs, bf16"), ("scratch3_fp16", "full, 3 epochs, fp16"),
                   ("fast30", "fast, 30 epochs"), ("ddp2", f"staged 1,1,1 on 2 processes ({backend})")):
    results = read(f"{name}_results.json")
    figure = "failed" if results is None else (
        f"{results['eval_split']} accuracy {results[results['eval_split'] + '_accuracy']:.2%} after "
        f"{results['train_wall_seconds']:.0f} s ({results['train_samples_per_second']:,.0f} img/s)")
    print(f"| {what} | {figure} | {name}.log |")
EOF
