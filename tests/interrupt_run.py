"""A tiny run through the fine-tuning command, stopped or slowed at a controlled point, for tests with real processes.

    python tests/interrupt_run.py MODE -- <finetune flags>

MODE is sigterm-at-finish, sigterm-in-training, sigterm-launcher-in-training, slow-finish or none.

sigterm-at-finish: SIGTERM to itself as the final model starts to be written (training has ended);
sigterm-in-training: SIGTERM at step 6 (checkpoint-4 is complete); sigterm-launcher-in-training: SIGTERM at step 6 to
the parent, `accelerate launch`, which then stops its child's whole process tree; slow-finish: 8 s of sleep before
the final writes, so that a second run can try the same folder meanwhile.
"""

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny_run import TINY  # noqa: E402

from training.cli import finetune_main  # noqa: E402
from training.trainer import StagedTrainer  # noqa: E402


def patch(mode: str) -> None:
    save_model, training_step = StagedTrainer.save_model, StagedTrainer.training_step

    def final_save(self, *args, _internal_call=False, **kwargs):
        if not _internal_call:  # the final model, after training (checkpoints save with _internal_call=True)
            if mode == "sigterm-at-finish":
                os.kill(os.getpid(), signal.SIGTERM)
            elif mode == "slow-finish":
                time.sleep(8)
        return save_model(self, *args, _internal_call=_internal_call, **kwargs)

    def step(self, *args, **kwargs):
        if mode == "sigterm-in-training" and self.state.global_step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        if mode == "sigterm-launcher-in-training" and self.state.global_step == 5:
            os.kill(os.getppid(), signal.SIGTERM)  # as `timeout` does to `accelerate launch`, which stops its tree
        return training_step(self, *args, **kwargs)

    StagedTrainer.save_model, StagedTrainer.training_step = final_save, step


if __name__ == "__main__":
    patch(sys.argv[1])
    sys.exit(finetune_main([*TINY, *sys.argv[3:]]))
