"""Checkpoints pushed while training (--hub_strategy) and a resume from the Hub, up to the network: a local fake of
the Hub's upload and download calls, that can fail a push."""

import json
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from fnmatch import fnmatch
from pathlib import Path

import pytest
from helpers import assert_same_weights, flags
from huggingface_hub import HfApi
from tiny_run import TINY

from training import cli, hub
from training.arguments import parse_arguments
from training.checkpoints import checkpoint_problem

PUSH = ["--push_to_hub", "--hub_model_id", "someone/model"]


class FakeHub:
    """One model repository in a local folder: upload_folder (in a background thread with run_as_future, as the
    Hub client does), snapshot_download; the commits it took, and the ones it was told to fail."""

    def __init__(self, root: Path, fail: set[int] = frozenset()):
        self.repo, self.cache, self.fail = root / "repo", root / "cache", fail
        self.commits: list[dict] = []
        self.threads = ThreadPoolExecutor(1)

    def upload_folder(self, api, *, repo_id, folder_path, path_in_repo=None, commit_message=None,
                      ignore_patterns=None, delete_patterns=None, run_as_future=False, **kwargs):
        if run_as_future:
            return self.threads.submit(self.upload_folder, api, repo_id=repo_id, folder_path=folder_path,
                                       path_in_repo=path_in_repo, commit_message=commit_message,
                                       ignore_patterns=ignore_patterns, delete_patterns=delete_patterns)
        index = len(self.commits)
        source = Path(folder_path)
        files = [str(path.relative_to(source)) for path in sorted(source.rglob("*")) if path.is_file()]
        files = [name for name in files if not any(fnmatch(name, pattern) for pattern in ignore_patterns or [])]
        subfolders = sorted({name.split("/")[0] for name in files if "/" in name})
        self.commits.append({"message": commit_message, "files": files, "complete": {
            folder: checkpoint_problem(source / folder) is None for folder in subfolders}})
        if index in self.fail:
            raise ConnectionError("the network went away")
        target = self.repo / (path_in_repo or "")
        for old in [path for path in self.repo.rglob("*") if path.is_file()]:
            if any(fnmatch(str(old.relative_to(self.repo)), pattern) for pattern in delete_patterns or []):
                old.unlink()
        for name in files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
        return f"https://huggingface.co/{repo_id}/commit/{index}"

    def snapshot_download(self, repo_id, allow_patterns=(), token=None):
        for path in self.repo.rglob("*"):
            name = str(path.relative_to(self.repo))
            if path.is_file() and any(fnmatch(name, pattern) for pattern in allow_patterns):
                (self.cache / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, self.cache / name)
        return str(self.cache)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    def make(fail=frozenset()):
        fake = FakeHub(tmp_path / "hub", set(fail))
        monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kwargs: fake.upload_folder(api, **kwargs))
        monkeypatch.setattr(hub, "snapshot_download", fake.snapshot_download)
        monkeypatch.setattr(cli, "check_push_access", lambda *args: "someone/model")  # the Hub said yes
        return fake
    return make


def finetune(dataset: Path, output_dir: Path, *more: str) -> int:
    return cli.finetune_main([*TINY, *flags(dataset, output_dir, *more)])


def test_checkpoint_strategy_pushes_each_complete_checkpoint_then_the_finished_folder(dataset, tmp_path, fake_hub):
    fake = fake_hub()
    output_dir = tmp_path / "out"
    assert finetune(dataset, output_dir, *PUSH, "--hub_strategy", "checkpoint", "--hub_always_push") == 0
    during, final = fake.commits[:-1], fake.commits[-1]
    expected = [f"Training in progress, epoch {epoch} (checkpoint-{4 * epoch})" for epoch in (1, 2, 3)]
    assert [commit["message"] for commit in during] == expected
    for commit in during:
        assert commit["complete"] == {"last-checkpoint": True}, "a checkpoint is pushed only once complete"
        assert {"config.json", "model.safetensors", "modeling_resnet_cbam.py"} <= set(commit["files"])
        assert "last-checkpoint/optimizer.pt" in commit["files"]
        assert "last-checkpoint/training_args.bin" not in commit["files"], "this machine's paths and token stay"
    assert "README.md" in final["files"] and not any(name.startswith("checkpoint-") for name in final["files"])
    state = json.loads((fake.repo / "last-checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    assert not list(output_dir.glob(".*.partial")), "the staged links are deleted once pushed"


def test_a_push_that_fails_mid_run_is_logged_once_and_reported_at_the_end(dataset, tmp_path, fake_hub, caplog):
    fake = fake_hub(fail={1})
    with caplog.at_level(logging.INFO):
        assert finetune(dataset, tmp_path / "out", *PUSH, "--hub_strategy", "every_save", "--hub_always_push") == 0
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failures[0].startswith("pushing checkpoint-8 to someone/model failed (ConnectionError: the network went "
                                  "away); training goes on")
    assert len(failures) == 2 and failures[1].startswith("pushed to https://huggingface.co/someone/model/commit/3; 2 "
                                                         "checkpoint(s) pushed during training (every_save); "
                                                         "checkpoint-8 failed")
    assert len(fake.commits) == 4
    assert all(not c["complete"] for c in fake.commits[:3]), "every_save: the model only, no checkpoint folder"


def test_a_checkpoint_pushed_to_the_hub_resumes_exactly(dataset, tmp_path, fake_hub, caplog):
    fake = fake_hub()
    first = tmp_path / "first"
    assert finetune(dataset, first, *PUSH, "--hub_strategy", "all_checkpoints", "--hub_always_push") == 0
    assert sorted(path.name for path in fake.repo.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-4",
                                                                            "checkpoint-8"]
    resumed = tmp_path / "resumed"  # a new session, on another machine: nothing local but the data
    with caplog.at_level(logging.INFO):
        assert finetune(dataset, resumed, "--resume_from_checkpoint", "hf://someone/model/checkpoint-4") == 0
    assert f"resuming from hf://someone/model/checkpoint-4, downloaded into {fake.cache / 'checkpoint-4'}" in \
        caplog.messages
    assert_same_weights(first, resumed)


def test_a_push_still_running_makes_the_next_checkpoint_wait_for_the_next_save(tmp_path):
    pusher = hub.CheckpointPusher("someone/model", "checkpoint")
    running = Future()  # never done
    pusher.pending = [running]
    state = type("State", (), {"is_world_process_zero": True, "global_step": 8, "epoch": 2.0})()
    pusher.on_save(type("Args", (), {"output_dir": str(tmp_path)})(), state, None)
    assert pusher.skipped == ["checkpoint-8"] and pusher.pending == [running]
    running.set_result("the previous push is done")
    assert pusher.finish().endswith("; not pushed while a previous push ran: checkpoint-8")


@pytest.mark.parametrize(("more", "message"), [
    (["--hub_strategy", "checkpoint"], "--hub_strategy checkpoint pushes checkpoints to the Hub: it needs "
                                       "--push_to_hub"),
    ([*PUSH, "--hub_strategy", "checkpoints"], "--hub_strategy must be one of end, every_save, checkpoint, "
                                               "all_checkpoints, got 'checkpoints'"),
    ([*PUSH, "--hub_strategy", "checkpoint", "--save_strategy", "no"], "--save_strategy no saves none"),
    ([*PUSH, "--hub_always_push"], "--hub_always_push is about pushes during training"),
])
def test_hub_flags_that_cannot_work_are_refused_by_name(tmp_path, more, message):
    with pytest.raises(ValueError) as error:
        parse_arguments(["--output_dir", str(tmp_path / "out"), *more])
    assert message in str(error.value)


def test_a_hub_checkpoint_that_is_not_there_is_said_before_loading(tmp_path, fake_hub):
    fake_hub()
    with pytest.raises(hub.HubError, match="someone/model has no last-checkpoint/"):
        hub.fetch_checkpoint("hf://someone/model")
    with pytest.raises(hub.HubError, match="write hf://USER/NAME"):
        hub.fetch_checkpoint("hf://someone")
