"""Fine-tune ResNet18-CBAM in stages on an image-classification dataset; write a Hub-ready model folder.

    accelerate launch scripts/finetune.py --output_dir outputs/cifar10                  # the seed recipe, CIFAR-10
    accelerate launch scripts/finetune.py --dataset_name ../shared/datasets/cifar10 --backbone_weights none \\
        --recipe staged --max_train_samples 2000 --stage_epochs 1,1,1      # a quick look at the stages
    python scripts/finetune.py config.yaml                                              # every argument in one file

Runs the same under `python`, `accelerate launch` and `accelerate launch --multi_gpu --num_processes N`.
"""

import sys

from training.cli import finetune_main

if __name__ == "__main__":
    sys.exit(finetune_main())
