"""Evaluate a trained model on a dataset split: accuracy, per-class accuracy and the confusion matrix.

    python scripts/evaluate_model.py --model outputs/resnet-cbam        # a run folder: its own data and split
    python scripts/evaluate_model.py --model outputs/resnet-cbam --dataset_name uoft-cs/cifar10 --split test
    python scripts/evaluate_model.py --model outputs/resnet-cbam --dataset_name ../shared/datasets/cifar10 \\
        --split validation --json eval.json --plot confusion.png
    python scripts/evaluate_model.py --model outputs/resnet-cbam --top_losses 16   # and its worst mistakes

Data options as for training (Hub id, Hub-layout folder, image folders); only the evaluated split is needed; images
are prepared as the model was trained (its image size and normalisation); labels are matched to the model's by
name. (Not named evaluate.py: that would shadow the `evaluate` library on this script's own sys.path.)
"""

import sys

from training.evaluation import evaluate_main as main

if __name__ == "__main__":
    sys.exit(main())
