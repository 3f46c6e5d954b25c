"""Hyperparameter search with optuna: each trial an ordinary fine-tuning run in OUTPUT/trial-NNN, pruned on
validation accuracy; writes OUTPUT/trials.md and the best trial's command line in OUTPUT/best_command.txt.

    python scripts/search.py --dataset_name ../shared/datasets/cifar10 --output_dir runs/search --n_trials 20
    python scripts/search.py --train_dir photos/train --validation_dir photos/val --space space.json

Every scripts/finetune.py flag sets what all trials share (data, weights, recipe, epochs, seed); the space (the
default, or --space FILE) sets what varies. One process (python, not accelerate launch): the trials run one after
another. Stopped, the same command continues the search (OUTPUT/search.db).
"""

import sys

from training.search import search_main

if __name__ == "__main__":
    sys.exit(search_main())
