"""Validation accuracy against wall-clock time for finished runs: a table, and a plot of all of them together.

    python scripts/compare_runs.py runs/fast=fast runs/full=full --plot docs/accuracy_vs_time.png

Each run is an output folder of scripts/finetune.py (its trainer_state.json), optionally with =LABEL; a record
kept by `docs/render.py --record` works the same. `--summary true` prints one row per run instead: its final
accuracy, training time and speed (all_results.json), and the command that made it (a record's run.json).
"""

import sys

from training.compare import compare_main as main

if __name__ == "__main__":
    sys.exit(main())
