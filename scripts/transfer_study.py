"""The transfer study in one command: pretrain a plain ResNet18 on some CIFAR-10 classes and save it in
torchvision's format, then fine-tune it on the others with each recipe side by side, once per seed; writes
results.json, results.md and accuracy.png into --output_dir.

    python scripts/transfer_study.py --dataset_name ../shared/datasets/cifar10 --output_dir runs/transfer_study
    python scripts/transfer_study.py --train_per_class 0 --stage_epochs 5,15,30 --pretrain_image_size 224  # a GPU

Each run is an ordinary scripts/finetune.py run in its own folder; a finished one is reused on a second call.
"""

import sys

from training.study import study_main

if __name__ == "__main__":
    sys.exit(study_main())
