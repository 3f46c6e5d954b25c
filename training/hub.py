"""Pushing an output folder to the Hub: a check before training, checkpoints pushed in the background while it
trains (--hub_strategy), a push of the finished folder that loses nothing when it fails, and a checkpoint fetched
back from the Hub to resume."""

import logging
import os
import shutil
from concurrent.futures import Future
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from training.backbones import TORCHVISION_ARCHITECTURES, is_hub_id, torchvision_weights
from training.checkpoints import RUN_DATA

logger = logging.getLogger(__name__)

# Checkpoints, the pickled training arguments and where the data is on this machine stay local; weights, code,
# card, plots and results go (the Space folder goes to a Space, with scripts/push.py --space).
IGNORE = ["checkpoint-*", "checkpoint-*/**", "training_args.bin", "runs/**", "space/**", ".run.lock",
          ".*.partial", ".*.partial/**", RUN_DATA]


def base_model(backbone_weights: str, depths: list[int], model_name_or_path: str | None = None,
               layer_type: str = "basic") -> str | None:
    """The Hub model a run's weights came from, for the card's `base_model` (the Hub's model tree): a saved model's
    Hub id; torchvision's ImageNet weights as the Hub holds the same tensors (timm's `tv_in1k` copies); a timm or
    other Hub id as given; None for random weights and local files (the card names those in its text)."""
    if model_name_or_path:
        return model_name_or_path if is_hub_id(model_name_or_path) else None
    if backbone_weights == "torchvision":
        copy = "tv2_in1k" if torchvision_weights(layer_type, depths).name.endswith("V2") else "tv_in1k"
        return f"timm/{TORCHVISION_ARCHITECTURES[(layer_type, tuple(depths))]}.{copy}"
    return backbone_weights if is_hub_id(backbone_weights) else None


class HubError(RuntimeError):
    """The Hub cannot take the push, with what to do about it."""


def check_push_access(repo_id: str | None, token: str | None = None, private: bool | None = None,
                      space: bool = False) -> str:
    """Before training: a token that the Hub accepts and a repo it can write to (created if absent; with `space`, a
    Gradio Space)."""
    if not repo_id:
        raise HubError("--push_to_hub needs --hub_model_id (e.g. your-name/resnet-cbam-cifar10)")
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
    except OfflineModeIsEnabled as error:
        raise HubError(
            "--push_to_hub, but HF_HUB_OFFLINE is set: unset it or push later with scripts/push.py"
        ) from error
    except (HfHubHTTPError, LocalTokenNotFoundError, ValueError) as error:
        raise HubError(
            f"cannot push to the Hub: no valid token ({error}); run `hf auth login` or set HF_TOKEN"
        ) from error
    except Exception as error:  # no network: httpx's ConnectError, timeouts, proxies
        raise HubError(f"cannot reach the Hub ({type(error).__name__}: {error}); check the network, or train without "
                       "--push_to_hub and push the folder later with scripts/push.py") from error
    try:
        kind = dict(repo_type="space", space_sdk="gradio") if space else {}
        return api.create_repo(repo_id, private=private, exist_ok=True, **kind).repo_id
    except (HfHubHTTPError, OSError) as error:
        raise HubError(f"cannot create or write {repo_id} as {user}: {error}") from error


def push_folder(folder: str | Path, repo_id: str, token: str | None = None, message: str = "Upload model") -> str:
    """Upload a finished output folder: weights, code, config, processor, card, plots, results."""
    folder = Path(folder)
    missing = [name for name in ("config.json", "model.safetensors", "README.md") if not (folder / name).is_file()]
    if missing:
        raise HubError(f"{folder} is not a finished model folder: {', '.join(missing)} missing")
    commit = HfApi(token=token).upload_folder(
        folder_path=str(folder), repo_id=repo_id, commit_message=message, ignore_patterns=IGNORE
    )
    return str(getattr(commit, "commit_url", commit))


def push_space(folder: str | Path, space_id: str, token: str | None = None, message: str = "Upload demo") -> str:
    """Upload a finished output folder's Space (training/space.py: app, requirements, card, demo code, examples) to
    the root of a Space, and its model (what push_folder uploads) under model/, in one commit."""
    folder = Path(folder)
    missing = [name for name in ("config.json", "model.safetensors", "space/app.py") if not (folder / name).is_file()]
    if missing:
        raise HubError(f"{folder} is not a finished model folder with a Space: {', '.join(missing)} missing")
    space = folder / "space"
    files = {str(path.relative_to(space)): path for path in sorted(space.rglob("*")) if path.is_file()}
    model = [str(path.relative_to(folder)) for path in sorted(folder.rglob("*")) if path.is_file()]
    files |= {f"model/{name}": folder / name for name in filter_repo_objects(model, ignore_patterns=IGNORE)}
    commit = HfApi(token=token).create_commit(
        repo_id=space_id, repo_type="space", commit_message=message,
        operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()],
    )
    return str(getattr(commit, "commit_url", commit))


# --hub_strategy: what each save pushes besides the model at the repo's root ("end": nothing until the end)
HUB_STRATEGIES = {"end": None, "every_save": None, "checkpoint": "last-checkpoint", "all_checkpoints": "checkpoint-N"}
MODEL_FILES = ("config.json", "model.safetensors", "configuration_resnet_cbam.py", "modeling_resnet_cbam.py",
               "preprocessor_config.json")  # of a checkpoint: the model at that step, loadable from the repo's root
HUB_CHECKPOINT = "hf://"  # --resume_from_checkpoint hf://USER/NAME[/SUBFOLDER]
LOCAL_ONLY = ["training_args.bin"]  # pickled arguments: this machine's paths, and a --hub_token if one was given


class CheckpointPusher(TrainerCallback):
    """--hub_strategy every_save, checkpoint or all_checkpoints: after each checkpoint is complete on disk (on_save
    comes after the Trainer has written it), one commit in the background with the model at the repo's root and,
    but for every_save, the checkpoint itself (in last-checkpoint/, replaced each time, or in checkpoint-N/).

    The checkpoint is first linked (hard links: no copy, and the files outlive the Trainer's rotation of old
    checkpoints) into `.checkpoint-N.push.partial` in the output folder, deleted once pushed. While a push is still
    running, a new checkpoint is not pushed (the next one will be), unless --hub_always_push. A failed push is
    logged once, training goes on, and `finish` reports it before the finished folder is pushed.
    """

    def __init__(self, repo_id: str, strategy: str, token: str | None = None, always: bool = False):
        self.repo_id, self.strategy, self.token, self.always = repo_id, strategy, token, always
        self.pending: list[Future] = []
        self.pushed: list[str] = []
        self.failed: dict[str, str] = {}
        self.skipped: list[str] = []

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        self.pending = [future for future in self.pending if not future.done()]
        if self.pending and not self.always:
            self.skipped.append(name)
            logger.info("not pushing %s: the previous checkpoint's push is still running", name)
            return
        self.pending.append(self._push(Path(args.output_dir), name, state))

    def _push(self, output_dir: Path, name: str, state) -> Future:
        checkpoint, staged = output_dir / name, output_dir / f".{name}.push.partial"
        subfolder = HUB_STRATEGIES[self.strategy]
        if subfolder == "checkpoint-N":
            subfolder = name
        _link_tree(checkpoint, staged, [file for file in MODEL_FILES if (checkpoint / file).is_file()])
        if subfolder:
            _link_tree(checkpoint, staged / subfolder, [path.name for path in checkpoint.iterdir()
                                                        if path.is_file() and path.name not in LOCAL_ONLY])
        when = f"epoch {round(state.epoch)}" if state.epoch == round(state.epoch) else f"step {state.global_step}"
        future = HfApi(token=self.token).upload_folder(
            repo_id=self.repo_id, folder_path=str(staged), commit_message=f"Training in progress, {when} ({name})",
            delete_patterns=[f"{subfolder}/**"] if subfolder == "last-checkpoint" else None, run_as_future=True,
        )
        future.add_done_callback(lambda done: self._done(done, name, staged))
        return future

    def _done(self, future: Future, name: str, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)
        error = future.exception()
        if error is None:
            self.pushed.append(name)
            return
        self.failed[name] = f"{type(error).__name__}: {error}"
        logger.warning("pushing %s to %s failed (%s); training goes on, and the finished folder is pushed at the "
                       "end", name, self.repo_id, self.failed[name])

    def finish(self) -> str:
        """Wait for the pushes still running; what was pushed during training, and what was not, in one line."""
        for future in self.pending:
            future.exception()  # waits; the failure itself was logged when it happened
        pushed = f"{len(self.pushed)} checkpoint(s) pushed during training ({self.strategy})"
        failed = "; ".join(f"{name} failed ({why})" for name, why in sorted(self.failed.items()))
        skipped = f"; not pushed while a previous push ran: {', '.join(self.skipped)}" if self.skipped else ""
        return pushed + (f"; {failed}" if failed else "") + skipped


def _link_tree(source: Path, target: Path, names: list[str]) -> None:
    """`names` of `source` hard-linked into `target` (copied where the file system cannot link)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copy2(source / name, target / name)


def fetch_checkpoint(url: str, token: str | None = None) -> Path:
    """hf://USER/NAME[/SUBFOLDER] (last-checkpoint by default, as --hub_strategy checkpoint pushes it): that
    checkpoint downloaded into the Hub cache, and its local folder returned, to be checked like any other."""
    parts = url.removeprefix(HUB_CHECKPOINT).strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise HubError(f"--resume_from_checkpoint {url}: write hf://USER/NAME (its last-checkpoint/) or "
                       "hf://USER/NAME/checkpoint-N")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:]) or "last-checkpoint"
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=[f"{subfolder}/*"], token=token)) / subfolder
    except Exception as error:  # not found, no access, no network: said before anything loads
        raise HubError(f"--resume_from_checkpoint {url}: cannot download {subfolder}/ of {repo_id} "
                       f"({type(error).__name__}: {error})") from error
    if not folder.is_dir():
        raise HubError(f"--resume_from_checkpoint {url}: {repo_id} has no {subfolder}/ (is the run pushing with "
                       "--hub_strategy checkpoint?)")
    logger.info("resuming from %s, downloaded into %s", url, folder)
    return folder
