"""The optimizer of a run, from the Trainer's own flags: --optim, --optim_args, --weight_decay, --adam_*.

One optimizer over every parameter, in param groups fixed for the whole run (one per module group, split into
weights that decay and 1-D parameters that do not), so a checkpoint's optimizer state fits in every stage.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from training.script_args import flag_value

# --optim value -> (torch class, fused kernel). The fused kernels are 5x faster here (7 vs 35-45 ms a step for 11M
# parameters on this CPU) and compute the same update.
OPTIMIZERS = {
    "adamw_torch_fused": (torch.optim.AdamW, True),
    "adamw_torch": (torch.optim.AdamW, False),
    "sgd": (torch.optim.SGD, True),
}
SGD_ARGS = {"momentum": float, "dampening": float, "nesterov": bool}
ADAM_FLAGS = {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}  # the Trainer's defaults


@dataclass(frozen=True)
class OptimizerSpec:
    """Which optimizer, its hyperparameters and its weight decay, checked when the flags are parsed."""

    name: str
    hyperparameters: dict
    weight_decay: float = 0.0

    @classmethod
    def from_args(cls, args) -> "OptimizerSpec":
        """From TrainingArguments-like flags; a ValueError names the flag and says what is accepted."""
        optim = flag_value(args.optim)
        if optim not in OPTIMIZERS:
            raise ValueError(f"--optim {optim} is not supported here; choose one of {', '.join(OPTIMIZERS)}")
        if args.weight_decay < 0:
            raise ValueError(f"--weight_decay must be >= 0, got {args.weight_decay}")
        if optim == "sgd":
            adam_set = [f"--{flag}" for flag, default in ADAM_FLAGS.items() if getattr(args, flag) != default]
            if adam_set:
                raise ValueError(f"{', '.join(adam_set)} set with --optim sgd: they apply to adamw only")
            return cls(optim, _sgd_arguments(args.optim_args), args.weight_decay)
        if args.optim_args:
            raise ValueError(f"--optim_args {args.optim_args!r}: only --optim sgd takes optim_args "
                             f"({', '.join(SGD_ARGS)}); set Adam's with --adam_beta1/2 and --adam_epsilon")
        betas = (args.adam_beta1, args.adam_beta2)
        if not all(0 <= beta < 1 for beta in betas) or not args.adam_epsilon > 0:
            raise ValueError(f"--adam_beta1/2 must be in [0, 1) and --adam_epsilon > 0, got {betas} and "
                             f"{args.adam_epsilon}")
        return cls(optim, {"betas": betas, "eps": args.adam_epsilon}, args.weight_decay)

    def build(self, groups: dict[str, list[nn.Parameter]], device: torch.device,
              batchnorm: Iterable[nn.Parameter] = ()) -> torch.optim.Optimizer:
        """The optimizer over `groups` (name -> parameters). Each param group carries its module group's name in
        "group", for the scheduler; weight decay applies to weights of 2 or more dimensions only, never to
        BatchNorm weights, biases or other 1-D parameters (timm's `param_groups_weight_decay` convention). The
        `batchnorm` parameters (given with --train_bn) go into param groups of their own, marked "batchnorm": they
        train while the rest of their group is frozen."""
        apart = {id(p) for p in batchnorm}
        param_groups = []
        for name, parameters in groups.items():
            decayed = [p for p in parameters if p.ndim > 1]
            kept = [p for p in parameters if p.ndim <= 1 and id(p) not in apart]
            scale_shift = [p for p in parameters if id(p) in apart]
            for members, decay, extra in ((decayed, self.weight_decay, {}), (kept, 0.0, {}),
                                          (scale_shift, 0.0, {"batchnorm": True})):
                if members:
                    param_groups.append({"params": members, "lr": 1.0, "weight_decay": decay, "group": name,
                                         **extra})
        optimizer_class, fused = OPTIMIZERS[self.name]
        fused = (fused and device.type in ("cpu", "cuda")) or None
        return optimizer_class(param_groups, lr=1.0, fused=fused, **self.hyperparameters)

    def describe(self) -> str:
        shown = ", ".join(f"{key}={value}" for key, value in self.hyperparameters.items())
        return f"{self.name} ({shown}{', ' if shown else ''}weight decay {self.weight_decay:g} on weights)"


def _sgd_arguments(optim_args: str | None) -> dict:
    """'momentum=0.9,nesterov=True' -> {'momentum': 0.9, 'nesterov': True}, checked key by key."""
    values = {}
    for item in filter(None, (optim_args or "").replace(" ", "").split(",")):
        key, _, text = item.partition("=")
        if key not in SGD_ARGS or not text:
            raise ValueError(f"--optim_args: {item!r} is not one of {', '.join(f'{k}=...' for k in SGD_ARGS)}")
        if SGD_ARGS[key] is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(f"--optim_args: {key} must be True or False, got {text!r}")
            values[key] = text.lower() == "true"
        else:
            try:
                values[key] = float(text)
            except ValueError as error:
                raise ValueError(f"--optim_args: {key} must be a number, got {text!r}") from error
    if values.get("nesterov") and not values.get("momentum", 0) > 0:
        raise ValueError("--optim_args: nesterov=True needs momentum > 0 (e.g. momentum=0.9,nesterov=True)")
    return values
