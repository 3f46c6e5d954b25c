"""Pushing an output folder to the Hub: a check before training, and a push that loses nothing when it fails."""

from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects

from training.checkpoints import RUN_DATA

# Checkpoints, the pickled training arguments and where the data is on this machine stay local; weights, code,
# card, plots and results go (the Space folder goes to a Space, with scripts/push.py --space).
IGNORE = ["checkpoint-*", "checkpoint-*/**", "training_args.bin", "runs/**", "space/**", ".run.lock",
          ".*.partial", RUN_DATA]


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
