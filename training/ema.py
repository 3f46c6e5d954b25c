"""An exponential moving average of the weights (--ema_decay): updated after every optimizer step by a callback,
used for every evaluation and for the saved model, and saved in each checkpoint so that a resume continues it.

After optimizer step t (1-based) the average is `ema = d_t * ema + (1 - d_t) * w_t`, starting from the weights
training starts with, where d_t = min(decay, (1 + t) / (10 + t)): a short memory at first, so that the random
initialisation is forgotten within the first steps of a short run (TensorFlow's num_updates, timm's warmup), then
`decay`. d_t depends on the step alone, so a resume needs only the averaged tensors.
BatchNorm's running mean and variance are averaged with the same decay as the weights: the live statistics were
measured through the live weights, and averaging both keeps each layer's statistics from the same stretch of
training as its averaged weights (as timm's ModelEmaV3 does). The integer counters (num_batches_tracked) are copied,
not averaged. torch's AveragedModel would average those counters too and keep a second module; here the average
is the model's state as plain tensors, which the swap for evaluation and the checkpoint both need.
"""

import contextlib
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

logger = logging.getLogger(__name__)
EMA_FILE = "ema.safetensors"


class WeightEMA:
    """The average of a model's floating-point state (parameters and BatchNorm statistics), as tensors."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        self._floating = [name for name, tensor in self.state.items() if tensor.is_floating_point()]

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step `step` (1-based)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        live = model.state_dict()
        torch._foreach_lerp_([self.state[n] for n in self._floating], [live[n] for n in self._floating],
                             1 - self.decay_at(step))
        for name in self.state.keys() - set(self._floating):
            self.state[name].copy_(live[name])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module):
        """The averaged weights in `model` for the duration (an evaluation), the live ones back afterwards."""
        live = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(live)

    def save(self, folder: Path) -> None:
        save_file({name: tensor.contiguous() for name, tensor in self.state.items()}, str(Path(folder) / EMA_FILE))

    def load(self, folder: Path) -> None:
        path = Path(folder) / EMA_FILE
        if not path.exists():
            raise FileNotFoundError(f"{folder}: {EMA_FILE} missing: that run kept no average of the weights")
        saved = load_file(str(path))
        if saved.keys() != self.state.keys():
            raise ValueError(f"{path}: holds the average of another architecture")
        for name, tensor in saved.items():
            self.state[name].copy_(tensor)


class EMACallback(TrainerCallback):
    """Starts the average at the first step (or from `checkpoint`), updates it after every optimizer step and
    writes it into every checkpoint (before RunFactsCallback marks the checkpoint complete)."""

    def __init__(self, decay: float, checkpoint: Path | None = None):
        self.decay, self.checkpoint = decay, checkpoint
        self.ema: WeightEMA | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.ema = WeightEMA(model, self.decay)
        if self.checkpoint is None:
            return
        if (Path(self.checkpoint) / EMA_FILE).exists():
            self.ema.load(self.checkpoint)
            logger.info("EMA of the weights resumed from %s", self.checkpoint)
        else:  # a complete checkpoint of a run without EMA, resumed with --allow_changed_run --ema_decay
            logger.warning("%s holds no %s: the average of the weights starts from its weights", self.checkpoint,
                           EMA_FILE)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model, state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.ema.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")
