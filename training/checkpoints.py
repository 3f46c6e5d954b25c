"""The output folder and its checkpoints: a finished run is never overwritten by accident, and a run resumes only
from a complete checkpoint of the same run.

Each checkpoint gets `run_facts.json` (what defines the run: schedule, model, data, batch, optimizer, ...) once the
Trainer has written everything else into it. That file is the checkpoint's completion mark: a crash while saving
leaves a folder without it, which `--resume_from_checkpoint last` skips, saying so.
"""

import errno
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from textwrap import shorten

import torch
from safetensors import safe_open
from transformers import TrainerCallback
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from modeling_resnet_cbam import ResNetCBAMConfig

logger = logging.getLogger(__name__)

RUN_FACTS = "run_facts.json"
# Model facts added to the run's identity after checkpoints were first written, with the value every older run had
LATER_MODEL_FACTS = {"crop_pct": 1.0, "layer_type": "basic", "cbam_style": "tutorial"}
RUN_COMPLETE = "run_complete.json"  # written last of a finished run's outputs: the folder is complete
RUN_DATA = "run_data.json"  # where the run's images are on this machine: for evaluating it later; never pushed
LOCK = ".run.lock"  # training/lock.py's
# Everything a run of this project writes into its output folder (and its checkpoint-N folders): what
# --overwrite_output_dir deletes, and nothing else
RUN_OUTPUTS = {"model.safetensors", "config.json", "configuration_resnet_cbam.py", "modeling_resnet_cbam.py",
               "preprocessor_config.json", "README.md", "all_results.json", "trainer_state.json", "training_args.bin",
               RUN_COMPLETE, RUN_DATA, "model.onnx", "model.onnx.json", "plots", "space", "runs"}
WEIGHT_SHAPES = ("depths", "layer_type", "stem", "cbam_placement", "cbam_init", "cbam_style", "cbam_reduction",
                 "cbam_kernel_size", "num_channels")
RESUMABLE = ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", RUN_FACTS)


class RunFolderError(ValueError):
    """An output folder or checkpoint that cannot be used as asked, with what to do instead."""


class WriteError(RuntimeError):
    """A file of the run could not be written: which, why (the disk is full, with the free space), and what is
    still complete on disk."""


@contextmanager
def writing(what: str, output_dir: str | Path):
    """Turn a failed write inside into a WriteError: an OSError, or torch's writer failing (a RuntimeError from its
    zip writer or the C++ stream under it, whatever its wording), or any RuntimeError while the disk is all but
    full."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if not isinstance(error, OSError) and not _torch_writer_failed(error) and \
                _free_bytes(Path(output_dir)) >= LOW_SPACE:
            raise
        raise WriteError(_write_failure(error, what, Path(output_dir))) from error


LOW_SPACE = 64 * 2**20
TORCH_WRITER_WORDS = ("writ", "inline_container", "iostream", "PytorchStreamWriter", "unexpected pos")


def _torch_writer_failed(error: BaseException) -> bool:
    """Whether a RuntimeError, or one it was raised while handling, comes from torch.save's writer."""
    while error is not None:
        if any(word.lower() in str(error).lower() for word in TORCH_WRITER_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _free_bytes(folder: Path) -> int:
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    return shutil.disk_usage(existing).free


def _write_failure(error: Exception, what: str, folder: Path) -> str:
    free = _free_bytes(folder)
    full = getattr(error, "errno", None) == errno.ENOSPC or free < LOW_SPACE
    why = "the disk is full" if full else (getattr(error, "strerror", None) or
                                           shorten(str(error).splitlines()[0], 200, placeholder=" ..."))
    last = last_complete_checkpoint(folder)
    complete = f"the last complete checkpoint is {last.name}" if last else "no complete checkpoint yet"
    return (f"could not write {what} in {folder}: {why} ({free / 2**20:,.0f} MiB free there); {complete}. Free "
            "some space, then continue with --resume_from_checkpoint last")


def progress(checkpoint: Path) -> tuple[int, int]:
    """The optimizer step a checkpoint was saved at, and its run's last step."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state["global_step"], state["max_steps"]


def is_at_end(checkpoint: Path) -> bool:
    """Whether a checkpoint is the last step of its run (resuming it only writes the final outputs)."""
    step, last = progress(checkpoint)
    return step >= last


def stopped_early(checkpoint: Path) -> bool:
    """Whether its run stopped at this checkpoint before its last step (--early_stopping_patience): the Trainer's
    control, saved with the checkpoint, says that training stops."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    return bool(control.get("should_training_stop")) and state["global_step"] < state["max_steps"]


def mark_complete(output_dir: str | Path, facts: dict) -> None:
    """The last write of a finished run: its folder holds every output (model, results, card, plots, Space)."""
    partial = Path(output_dir) / f".{RUN_COMPLETE}.partial"
    partial.write_text(json.dumps(facts, indent=2))
    os.replace(partial, Path(output_dir) / RUN_COMPLETE)


def check_output_dir(output_dir: str | Path, overwrite: bool, resume: str | None,
                     data_paths: tuple[str, ...] = ()) -> list[str]:
    """Before anything loads: refuse a folder that holds a finished model or checkpoints, unless the run resumes
    from one of its checkpoints or --overwrite_output_dir says to replace it. Returns what is there to delete
    (empty: nothing): only what a run of this project writes. A folder that is not recognisably a run's, the working
    directory, or a folder that holds the data is refused rather than cleared."""
    folder = Path(output_dir)
    held = [name for name in ("model.safetensors", "README.md") if (folder / name).is_file()]
    held += sorted(path.name for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.is_dir())
    resumes_here = resume == "last" or (resume is not None and Path(resume).resolve().parent == folder.resolve())
    if not held or resumes_here:
        if held and overwrite:
            logger.warning("--overwrite_output_dir is ignored: --resume_from_checkpoint %s continues the run in %s",
                           resume, folder)
        return []
    if not overwrite:
        listed = f"{', '.join(held[:4])}{', ...' if len(held) > 4 else ''}"
        if last_complete_checkpoint(folder) is None and not (folder / RUN_COMPLETE).is_file():
            raise RunFolderError(f"{folder} holds a run stopped before its first complete checkpoint ({listed}): "
                                 "nothing there can be resumed; start again with --overwrite_output_dir, or choose "
                                 "another --output_dir")
        raise RunFolderError(
            f"{folder} already holds a run ({listed}): continue it with "
            "--resume_from_checkpoint last, replace it with --overwrite_output_dir, or choose another --output_dir"
        )
    here = folder.resolve()
    if here == Path.cwd().resolve() or any(Path(data).resolve().is_relative_to(here) for data in data_paths):
        raise RunFolderError(f"--overwrite_output_dir: {folder} is the working directory or holds the data; "
                             "choose another --output_dir for the new run")
    if not is_run_folder(folder):
        raise RunFolderError(f"--overwrite_output_dir: {folder} holds {', '.join(held[:4])} but is not a run folder "
                             "of this project (no ResNet-CBAM config.json, no run_complete.json, no complete "
                             "checkpoint): it is left as it is; choose another --output_dir")
    return sorted(path.name for path in folder.iterdir() if is_run_output(path.name))


def is_run_output(name: str) -> bool:
    """Whether a file or folder of an output folder is one a run of this project writes."""
    return name in RUN_OUTPUTS or name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") or \
        (name.startswith(".") and name.endswith(".partial"))


def is_run_folder(folder: Path) -> bool:
    """A folder this project wrote a run into: its completion mark, a complete checkpoint, or a ResNet-CBAM config."""
    if (folder / RUN_COMPLETE).is_file() or any(folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*/{RUN_FACTS}")):
        return True
    configs = [folder / "config.json", *folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*/config.json")]  # one half-written
    return any(_is_our_config(path) for path in configs)


def _is_our_config(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("model_type") == ResNetCBAMConfig.model_type
    except (OSError, ValueError, AttributeError):
        return False


def check_writable(folder: Path) -> None:
    """--output_dir is a folder, or can be made one, and can be written: tried now and undone, before data loads."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--output_dir {folder} is an existing file, not a folder")
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RunFolderError(f"--output_dir {folder} cannot be written ({error.strerror or error})") from error
    finally:
        for path in made:  # the deepest first: nothing is left of the try
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def clear_output_dir(output_dir: str | Path, to_delete: list[str]) -> None:
    """--overwrite_output_dir, once everything has loaded: delete the previous run's own files, keep everything else
    (this run's lock, and whatever the user keeps there), and say both."""
    folder = Path(output_dir)
    for name in to_delete:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    kept = sorted(path.name + ("/" if path.is_dir() else "") for path in folder.iterdir() if path.name != LOCK)
    logger.warning("--overwrite_output_dir: deleted the previous run in %s (%s)%s", output_dir, ", ".join(to_delete),
                   f"; kept what this project did not write: {', '.join(kept)}" if kept else "")


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What makes a checkpoint folder unusable for a resume (a missing or unreadable file), or None."""
    missing = [name for name in RESUMABLE if not (checkpoint / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    name = "model.safetensors"
    try:  # every file the resume will read, read now as the Trainer will (weights_only), before any data loads
        for path in sorted(checkpoint.glob("*.safetensors")):
            name = path.name
            with safe_open(path, framework="pt") as weights:
                weights.keys()
        for path in sorted([*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]):
            name = path.name
            with safe_globals():
                torch.load(path, map_location="cpu", weights_only=True)
        name = RUN_FACTS
        facts = json.loads((checkpoint / RUN_FACTS).read_text())
        name = "trainer_state.json"
        json.loads((checkpoint / name).read_text())["global_step"]
    except Exception as error:  # a truncated or foreign file, whatever the library says about it
        return f"{name} is unreadable ({shorten(f'{type(error).__name__}: {error}', 160, placeholder=' ...')})"
    return None if isinstance(facts, dict) else f"{RUN_FACTS} is not a JSON object"


def resolve_checkpoint(resume: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: `last` is the newest complete one in output_dir (incomplete ones are named
    and skipped); a path must be a complete checkpoint. A RunFolderError says what is wrong, naming the file."""
    if resume is None:
        return None
    if resume != "last":
        path = Path(resume)
        problem = checkpoint_problem(path) if path.is_dir() else "not a folder"
        if problem:
            raise RunFolderError(f"--resume_from_checkpoint {path}: {problem}")
        return path
    numbered = {int(path.name.rsplit("-", 1)[1]): path for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                if path.name.rsplit("-", 1)[1].isdigit()}
    for _, path in sorted(numbered.items(), reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("--resume_from_checkpoint last: skipping the incomplete checkpoint %s (%s)", path, problem)
    raise RunFolderError(f"--resume_from_checkpoint last: no complete checkpoint in {output_dir}")


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint `--resume_from_checkpoint last` would take, or None when there is no complete one."""
    try:
        return resolve_checkpoint("last", output_dir)
    except RunFolderError:
        return None


def changed_facts(checkpoint: Path, facts: dict) -> list[str]:
    """How this run's defining facts differ from those saved with the checkpoint, one line each."""
    saved, facts = json.loads((checkpoint / RUN_FACTS).read_text()), json.loads(json.dumps(facts))
    if "model" in saved:  # a checkpoint written before a fact existed had its value then
        saved["model"] = {**LATER_MODEL_FACTS, **saved["model"]}
    return [f"{key}: {json.dumps(saved.get(key))} in the checkpoint, {json.dumps(facts.get(key))} now"
            for key in sorted(set(saved) | set(facts)) if saved.get(key) != facts.get(key)]


class RunFactsCallback(TrainerCallback):
    """After each checkpoint is written: the run's defining facts into it, atomically, as its completion mark."""

    def __init__(self, facts: dict):
        self.facts = facts

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            partial = folder / f".{RUN_FACTS}.partial"
            partial.write_text(json.dumps(self.facts, indent=2))
            os.replace(partial, folder / RUN_FACTS)


def check_resume(checkpoint: Path, facts: dict, allow_changed_run: bool, output_dir: str | Path) -> list[str]:
    """Before training: the checkpoint must be of this very run with steps left to train, or the end of a run whose
    outputs were not all written (an interrupted finish: they are written from it). Returns the differences that
    --allow_changed_run accepted (for the card), else raises a RunFolderError listing them."""
    changes = changed_facts(checkpoint, facts)
    saved = json.loads((checkpoint / RUN_FACTS).read_text())
    reshaped = [key for key in WEIGHT_SHAPES if saved.get("model", {}).get(key) != facts["model"].get(key)]
    reshaped += ["the number of labels"] if len(saved.get("labels", [])) != len(facts["labels"]) else []
    if reshaped and allow_changed_run:
        raise RunFolderError(f"--allow_changed_run cannot resume {checkpoint} with another {', '.join(reshaped)}: "
                             "its weights and optimizer state do not fit the new model. Start a new run instead "
                             f"(--backbone_weights {checkpoint} starts from its backbone)")
    if changes and not allow_changed_run:
        raise RunFolderError(f"{checkpoint} is a checkpoint of another run; resuming it with these arguments would "
                             "not continue it:\n  " + "\n  ".join(changes) +
                             "\nResume with the run's own arguments, or accept the changes with --allow_changed_run")
    if not changes and (Path(output_dir) / RUN_COMPLETE).is_file():  # a finished run stays finished
        step, last = progress(checkpoint)
        if step >= last:
            raise RunFolderError(f"{checkpoint} is the end of its run (step {step} of {last}): nothing is left to "
                                 "train")
        if stopped_early(checkpoint):
            raise RunFolderError(f"{checkpoint} is where its run stopped early (step {step} of {last}, "
                                 "--early_stopping_patience): nothing is left to train")
    return changes
