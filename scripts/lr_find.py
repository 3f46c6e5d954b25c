"""The learning-rate range test for one stage of a recipe, on your data and backbone: the rate to give that stage.

    python scripts/lr_find.py --dataset_name ../shared/datasets/cifar10 --stage 1
    python scripts/lr_find.py --train_dir photos/train --validation_dir photos/val --stage 3 --num_steps 200

Every scripts/finetune.py flag chooses the data, model, weights, recipe, batch, optimizer and precision as for
training; the flags below choose the test. The lr rises exponentially from --start_lr to --end_lr over --num_steps
steps (the stage's highest rate; its other groups in the proportions of its rates), on the groups that stage
trains, until the smoothed training loss passes 4x its lowest. Prints the suggestion (a tenth of the rate of the
lowest loss) and the steepest descent, and draws the curve in --plot. Nothing is saved but the plot (a given
--output_dir is not written to).
"""

import sys

from training.lr_find import lr_find_main as main

if __name__ == "__main__":
    sys.exit(main())
