"""Every field of transformers' TrainingArguments, classified for this recipe: read by it, passed to the Trainer as it
is, or refused when set (the Trainer would ignore or contradict it here); and --help's layout that follows.
"""

import argparse
import dataclasses
import textwrap

from transformers import HfArgumentParser

# The recipe reads these: the optimizer, the lr of each group at each step, the loss, the batch, the precision.
RECIPE_FIELDS = {
    "num_train_epochs", "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim",
    "optim_args", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "label_smoothing_factor",
    "max_grad_norm", "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "bf16", "fp16",
    "use_cpu",
    "push_to_hub", "hub_model_id", "hub_token", "hub_private_repo", "hub_strategy", "hub_always_push",
    "resume_from_checkpoint", "output_dir", "load_best_model_at_end", "metric_for_best_model",
}  # and this project's own: channels_last, data_on_device, overwrite_output_dir, allow_changed_run, ema_decay, tta,
# export_onnx
# Passed to the Trainer as they are, and known to work with this recipe.
TRAINER_FIELDS = {
    "per_device_eval_batch_size", "tf32", "torch_compile", "torch_compile_backend", "torch_compile_mode",
    "torch_empty_cache_steps", "logging_strategy", "logging_steps", "logging_first_step", "log_on_each_node",
    "log_level", "log_level_replica", "disable_tqdm", "report_to", "run_name", "project",
    "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "eval_strategy", "eval_steps", "eval_delay",
    "eval_on_start", "eval_do_concat_batches", "eval_accumulation_steps", "save_strategy", "save_steps",
    "save_on_each_node", "save_total_limit", "save_only_model", "full_determinism", "data_seed",
    "dataloader_drop_last", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "dataloader_multiprocessing_context", "dataloader_in_order", "ddp_backend",
    "ddp_timeout", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "skip_memory_metrics", "local_rank",
}
_UNUSED = "has no effect on this image-classification recipe"
_OWN_LOOP = "would change the training loop this recipe's stages and exact resume rely on"
# Refused when set to anything but the default, with the reason.
REFUSED_FIELDS = {
    "max_steps": "stages are in epochs: use --stage_epochs or --num_train_epochs, not --max_steps",
    "fp16_full_eval": "evaluation runs under the training precision (--bf16 or --fp16)",
    "bf16_full_eval": "evaluation runs under the training precision (--bf16 or --fp16)",
    "activation_checkpointing": "the model does not support activation checkpointing",
    "activation_checkpointing_kwargs": "the model does not support activation checkpointing",
    "gradient_checkpointing": "the model does not support gradient checkpointing",
    "gradient_checkpointing_kwargs": "the model does not support gradient checkpointing",
    "optim_target_modules": "every parameter is in the optimizer; the stages decide what trains",
    "use_liger_kernel": "Liger kernels are for language models",
    "liger_kernel_config": "Liger kernels are for language models",
    "logging_nan_inf_filter": "a non-finite loss stops the run (at the next logging step), so there is none to "
                              "filter; the filter would also make the CPU wait for the device at every step",
    "use_cache": _UNUSED,
    "neftune_noise_alpha": "NEFTune is for text embeddings",
    "include_num_input_tokens_seen": _UNUSED,
    "average_tokens_across_devices": _UNUSED,
    "label_names": "the labels are the dataset's label column (--label_column_name)",
    "length_column_name": _UNUSED,
    "train_sampling_strategy": _OWN_LOOP,
    "remove_unused_columns": "the image column must reach the transforms; it stays False",
    "auto_find_batch_size": _OWN_LOOP,
    "prediction_loss_only": "the accuracy of every evaluation needs the predictions",
    "include_for_metrics": "the metrics are fixed (accuracy, per-class accuracy, confusion matrix)",
    "batch_eval_metrics": "the metrics are fixed (accuracy, per-class accuracy, confusion matrix)",
    "eval_use_gather_object": _UNUSED,
    "greater_is_better": "it follows --metric_for_best_model: higher accuracy, lower loss",
    "ignore_data_skip": "a resumed run must see the same batches as an uninterrupted one",
    "restore_callback_states_from_checkpoint": "the callbacks derive their state from the step",
    "enable_jit_checkpoint": _OWN_LOOP,
    "hub_revision": "the push goes to the main branch",
    "accelerator_config": "launch settings come from `accelerate launch` or configs/accelerate/",
    "parallelism_config": "only data parallelism (DDP) is supported",
    "fsdp": "only data parallelism (DDP) is supported",
    "fsdp_config": "only data parallelism (DDP) is supported",
    "deepspeed": "only data parallelism (DDP) is supported",
    "ddp_find_unused_parameters": "every parameter is used in every step",
    "ddp_static_graph": _OWN_LOOP,
    "debug": _UNUSED,
    "do_train": "the script always trains, evaluates each epoch and evaluates the final model",
    "do_eval": "the script always trains, evaluates each epoch and evaluates the final model",
    "do_predict": "the script always trains, evaluates each epoch and evaluates the final model",
}


def _is_off(value) -> bool:
    return value is None or value is False or value in ("", "no", [])


def was_set(instance, spec: dataclasses.Field) -> bool:
    """Whether a field holds other than its default. The Trainer's enums are strings and compare as such; the
    parser turns some "off" defaults into others ('no' into False, '' into None), which still mean off."""
    default = spec.default if spec.default_factory is dataclasses.MISSING else spec.default_factory()
    value = getattr(instance, spec.name)
    return value != default and not (_is_off(value) and _is_off(default))


# The help of the TrainingArguments fields the recipe reads, as they work here (transformers' own texts describe the
# Trainer's behaviour, which the recipe replaces: e.g. its --optim list, or a push at every save).
RECIPE_HELP = {
    "lr_scheduler_kwargs": 'JSON: {"min_lr_rate": x} (cosine\'s floor) or {"start_factor": x} (where warmup starts).',
    "optim": "adamw_torch_fused, adamw_torch (AdamW) or sgd; others are refused.",
    "optim_args": "For sgd: momentum, nesterov, dampening, e.g. momentum=0.9,nesterov=True.",
    "weight_decay": "On 2+-D weights only; decoupled for AdamW, L2 for SGD.",
    "adam_beta1": "AdamW's beta1; refused with sgd.",
    "adam_beta2": "AdamW's beta2; refused with sgd.",
    "adam_epsilon": "AdamW's epsilon; refused with sgd.",
    "gradient_accumulation_steps": "Steps per update; the schedule counts updates.",
    "label_smoothing_factor": "Label smoothing of the loss.",
    "push_to_hub": "Push the finished folder (access checked first); see --hub_strategy.",
    "load_best_model_at_end": "Keep the best validation epoch (--metric_for_best_model), not the last; "
                              "the card names it.",
    "hub_always_push": "Push every checkpoint even while the previous push runs (default: skip it; the next "
                       "one goes).",
    "hub_model_id": "The Hub repository to push to (user/name).",
    "hub_token": "The Hub token; default: the logged-in one.",
    "hub_private_repo": "Create the Hub repository private.",
    "seed": "Seeds init, data order, augmentation.",
    "use_cpu": "Train on the CPU even where a GPU is present.",
    "resume_from_checkpoint": "A checkpoint folder; last: the newest complete one in --output_dir; or "
                              "hf://USER/NAME[/checkpoint-N]: one a run pushed to the Hub.",
}
OWN_TRAINING_GROUP = ("training (this recipe's: optimizer, rates, loss and batch; precision and data placement; EMA; "
                      "TTA; the run folder, resume and push; ONNX export)")
TRAINER_GROUP = "Trainer (transformers TrainingArguments, passed to the Trainer as they are)"


def arrange_help(parser: HfArgumentParser, trainer_group: str) -> None:
    """Split the TrainingArguments group of --help in two: this project's training flags (with RECIPE_HELP's texts)
    before the Trainer's own fields, passed through; the refused fields hidden (the epilog lists them once)."""
    # argparse has no public way to move a flag between groups; its groups are plain lists of actions
    trainer = next(g for g in parser._action_groups if g.title == trainer_group)
    own = parser.add_argument_group(OWN_TRAINING_GROUP)
    for action in list(trainer._group_actions):
        if action.dest in REFUSED_FIELDS:
            action.help = argparse.SUPPRESS  # listed in the epilog, with the reason
        elif action.dest not in TRAINER_FIELDS and action.dest != "help":
            trainer._group_actions.remove(action)
            own._group_actions.append(action)
            action.help = RECIPE_HELP.get(action.dest, action.help)
    trainer.title = TRAINER_GROUP
    parser._action_groups.remove(own)
    parser._action_groups.insert(parser._action_groups.index(trainer), own)


def refused_epilog() -> str:
    by_reason: dict[str, list[str]] = {}
    for name, reason in REFUSED_FIELDS.items():
        by_reason.setdefault(reason, []).append(f"--{name}")
    lines = ["refused (set to anything but its default, each stops the script with its reason):"]
    for reason, names in by_reason.items():
        lines += textwrap.wrap(f"{', '.join(names)}: {reason}", width=100, initial_indent="  ", break_on_hyphens=False,
                               subsequent_indent="      ")
    return "\n".join(lines)
