"""The HF Trainer with the stage schedule's optimizer and learning rates, and one summary log entry per epoch."""

import logging
import time

import torch
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer

from training.batches import BatchPipeline, batch_mixing
from training.callbacks import batchnorm_affine, trained_parameter_count
from training.checkpoints import writing
from training.ema import EMACallback, WeightEMA
from training.inference import class_probabilities
from training.stages import GROUPS, Schedule, StagePlan

logger = logging.getLogger(__name__)


class StageLR(LambdaLR):
    """One lambda per param group giving the plan's lr of its module group at each step (0 while frozen).

    The plan lives here because it is the lr as a function of the step: built once, when the Trainer knows its
    number of steps, and read from here by the callbacks (which receive the scheduler) and the epoch summary.
    The lr being a pure function of the step, the Trainer's own scheduler stepping cannot undo it, and it resumes
    by itself; the plan is not saved in the checkpoint (it is rebuilt from the arguments).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, plan: StagePlan):
        self.plan = plan
        super().__init__(optimizer, [_lr_of(plan, group["group"], group.get("batchnorm", False))
                                     for group in optimizer.param_groups])

    def state_dict(self) -> dict:
        return {key: value for key, value in super().state_dict().items() if key != "plan"}

    def follow(self, step: int) -> None:
        """Set the lrs of optimizer step `step` (the Trainer's global_step). The Trainer does not step its scheduler
        after a step that fp16's GradScaler skipped (an overflowing gradient), so the scheduler's own count falls
        behind global_step, which the stages and checkpoints count in; it is brought back here."""
        if self.last_epoch != step:
            self.last_epoch = step - 1
            self.step()


def _lr_of(plan: StagePlan, group: str, batchnorm: bool):
    """A closure, so that LambdaLR saves no state for it."""

    def lr(step: int) -> float:
        return plan.lr(group, step, batchnorm)

    return lr


class DivergenceError(RuntimeError):
    """A non-finite loss: training stopped at the next logging step, evaluation or checkpoint, saving nothing."""


class DivergenceWatch:
    """The first optimizer step whose loss was not finite, and that loss, kept on the device.

    Recording is two elementwise ops a step and no host synchronisation (a Python `if` on the loss would make the
    CPU wait for the GPU at every step); `first` reads it once, where the Trainer synchronises anyway.
    """

    def __init__(self):
        self._step = self._loss = None

    def record(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float()
        if self._step is None:
            self._step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._loss = torch.zeros((), device=loss.device)
        first = ~torch.isfinite(loss) & (self._step < 0)
        self._step = torch.where(first, step, self._step)
        self._loss = torch.where(first, loss, self._loss)

    def first(self, accelerator) -> tuple[int, float] | None:
        """(0-based step, loss) of the earliest non-finite loss on any process, or None; every process calls it."""
        if self._step is None:
            return None
        steps = accelerator.gather(self._step[None]).tolist()
        losses = accelerator.gather(self._loss[None]).tolist()
        return min(((s, loss) for s, loss in zip(steps, losses, strict=True) if s >= 0), default=None)


class StagedTrainer(Trainer):
    """A Trainer whose optimizer and scheduler are built once from the schedule and never replaced.

    - One optimizer (--optim) over every parameter in fixed param groups (training/optimizers.py), so that a group
      frozen at the start is still optimised once unfrozen, and a checkpoint's optimizer state always fits.
    - StageLR: the lr of every group at every step, from the plan of the schedule over the Trainer's steps.
    - The loss: cross-entropy with --label_smoothing_factor, computed here on float32 logits.
    - Evaluation: with the EMA of the weights when --ema_decay is on (training/ema.py), and with --tta flip, on the
      mean softmax of each image and its mirror (the logits it reports are the log of that mean).
    - Divergence: a non-finite loss is recorded on the device at every step and read, once, before each logging
      step, evaluation and checkpoint, and at the end of training: the run stops there with a DivergenceError,
      within --logging_steps steps of it, and nothing is written after it. No host synchronisation per step.
    - Each batch goes through the BatchPipeline (training/batches.py): device augmentation, MixUp/CutMix, the
      memory format; its draws are seeded by the step, so a resumed run sees the same batches.
    - Training loss and accuracy are accumulated on the device and added, with the stage, its lrs, the trainable
      parameter count and the epoch time, to the log entry of each epoch's evaluation.
    """

    def __init__(self, *args, schedule: Schedule, device_data=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.schedule = schedule
        self.device_data = device_data
        mixing = batch_mixing(self.args.mixup_alpha, self.args.cutmix_alpha, self.model.config.num_labels)
        self.batches = BatchPipeline(device_data, mixing, self.args.channels_last)
        self._epoch_totals = None
        self._epoch_started = time.perf_counter()
        self._micro_step, self._micro_batch = None, 0  # which micro-batch of the optimizer step this is
        self.divergence = DivergenceWatch()

    def create_accelerator_and_postprocess(self) -> None:
        """As the Trainer's, and on a CPU with --fp16, fp16 as on a GPU: Accelerate turns neither autocast nor the
        GradScaler on there (it would train in fp32, silently), though torch runs both on a CPU. It is slow there;
        it is so that the fp16 path (scaler, skipped steps, its state in checkpoints) is the same code wherever it
        runs, and is tested."""
        super().create_accelerator_and_postprocess()
        accelerator = self.accelerator
        if self.args.fp16 and accelerator.device.type == "cpu" and accelerator.scaler is None:
            accelerator.native_amp = True  # read by prepare_model: the forward runs under torch.autocast(fp16)
            accelerator.scaler = torch.amp.GradScaler("cpu")
            logger.warning("fp16 on a CPU: autocast and loss scaling as on a GPU, many times slower than bf16 or "
                           "fp32 here; use it to check the fp16 path, not to train")

    @property
    def plan(self) -> StagePlan:
        return self.lr_scheduler.plan

    @property
    def ema(self) -> WeightEMA | None:
        """The average of the weights that EMACallback keeps, once training has started it."""
        return next((c.ema for c in self.callback_handler.callbacks if isinstance(c, EMACallback)), None)

    def evaluate(self, *args, **kwargs):
        if self.ema is None:
            return super().evaluate(*args, **kwargs)
        with self.ema.swapped_into(self.model):
            return super().evaluate(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.accelerator.unwrap_model(model or self.model)
            batchnorm = batchnorm_affine(model) if self.schedule.train_bn else ()
            self.optimizer = self.args.optimizer.build(model.parameter_groups(), self.args.device, batchnorm)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:  # built before the first step: the run's length is said before it starts
            plan = self.schedule.over_steps(num_training_steps)
            length, too_short = plan.length_report()
            logger.info("length: %s", length)
            if too_short:
                logger.warning("%s", too_short)
            self.lr_scheduler = StageLR(optimizer or self.optimizer, plan)
        return self.lr_scheduler

    def _save_checkpoint(self, model, trial):
        # private: no public hook wraps the save itself (on_save runs after it), and a failed write (a full disk)
        # must be said naming the checkpoint, before the Trainer's own traceback
        with writing(f"checkpoint-{self.state.global_step}", self.args.output_dir):
            super()._save_checkpoint(model, trial)

    def training_step(self, model, inputs, num_items_in_batch=None):
        step = self.state.global_step
        self._micro_batch = self._micro_batch + 1 if step == self._micro_step else 0
        self._micro_step = step
        loss = super().training_step(model, self.model_inputs(inputs, train=True), num_items_in_batch)
        self.divergence.record(loss, step)
        return loss

    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        self._stop_if_diverged()  # the steps after the last logging step, before the final model is saved
        return result

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        # private: the one place both step ends and epoch ends pass before logging, evaluating or saving; a callback
        # (on_step_end, on_epoch_end) would see the same flags but not the accelerator the check gathers over
        if self.control.should_log or self.control.should_evaluate or self.control.should_save:
            self._stop_if_diverged()
        super()._maybe_log_save_evaluate(*args, **kwargs)

    def _stop_if_diverged(self) -> None:
        diverged = self.divergence.first(self.accelerator)
        if diverged is None:
            return
        step, loss = diverged
        stage = self.plan.stage(step)
        raise DivergenceError(
            f"training diverged at step {step + 1} (stage {self.plan.stage_index(step) + 1}, {stage.describe()}; "
            f"lr then {self.plan.lr(stage.groups[0], step):g}): the loss was {loss}; stopped at step "
            f"{self.state.global_step}. Nothing was saved after step {step}; lower the learning rates (or add "
            "warmup) and start again"
        )

    def _augment_seed(self) -> int:
        """A seed per (run seed, optimizer step, micro-batch, rank): augmentation that resumes exactly."""
        accumulation = self.args.gradient_accumulation_steps
        position = self.state.global_step * accumulation + self._micro_batch
        return (self.args.seed * 1_000_003 + position) * 4096 + self.args.process_index

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        return super().prediction_step(model, self.model_inputs(inputs, train=False), prediction_loss_only,
                                       ignore_keys)

    def model_inputs(self, inputs: dict, train: bool) -> dict:
        """What the model gets for a DataLoader batch (training/batches.py), a training batch seeded by its step."""
        return self.batches(self._prepare_inputs(inputs), self._augment_seed() if train else None)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """A per-batch mean (the Trainer scales it for gradient accumulation), smoothed as the flag says; against
        the mixed soft targets of a MixUp/CutMix batch (label smoothing applies to them too)."""
        labels = inputs["labels"]
        outputs = model(pixel_values=inputs["pixel_values"])
        if not model.training and self.args.tta != "none":
            probabilities = class_probabilities(model, inputs["pixel_values"], self.args.tta, outputs.logits)
            outputs.logits = probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()
        loss = F.cross_entropy(outputs.logits.float(), inputs.get("targets", labels),
                               label_smoothing=self.args.label_smoothing_factor)
        if model.training:
            with torch.no_grad():
                correct = (outputs.logits.argmax(dim=-1) == labels).sum()
                seen = labels.new_tensor(labels.numel(), dtype=torch.float32)
                totals = torch.stack([loss.detach().float() * seen, correct.float(), seen])
                self._epoch_totals = totals if self._epoch_totals is None else self._epoch_totals + totals
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "eval_loss" in logs and self.model.training is False and self._epoch_totals is not None:
            logs = {**self._epoch_summary(), **logs}
        super().log(logs, start_time)

    def _epoch_summary(self) -> dict[str, float]:
        loss_sum, correct, seen = self.accelerator.reduce(self._epoch_totals, reduction="sum").tolist()
        self._epoch_totals = None
        now, started = time.perf_counter(), self._epoch_started
        self._epoch_started = now
        step = max(self.state.global_step - 1, 0)
        stage = self.plan.stage(step)
        return {
            "stage": self.plan.stage_index(step) + 1,
            "trainable_params": trained_parameter_count(self.accelerator.unwrap_model(self.model), stage,
                                                        self.schedule.train_bn),
            **{f"lr_{group}": self.plan.lr(group, step) for group in GROUPS},
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "epoch_time": now - started,
        }
