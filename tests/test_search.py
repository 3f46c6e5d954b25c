"""The hyperparameter search: trials are ordinary runs given the sampled flags, a second call continues the same
search, a pruned trial stops early, and a bad space is refused before any data loads."""

import json
import shlex

import optuna
import pytest
import torch
from helpers import flags, load_script
from tiny_run import TINY

from training import recipes
from training.arguments import parse_arguments
from training.search import SearchArguments, base_flags, check_space

SPACE = {"label_smoothing_factor": {"choices": [0.0, 0.3]}, "stage_lrs": {"choices": ["1e-3,1e-4,1e-5",
                                                                                      "3e-2,3e-3,3e-4"]}}


def search(dataset, root, *more, space=SPACE) -> int:
    (root.parent / "space.json").write_text(json.dumps(space))
    return load_script("search").search_main([*TINY, *flags(dataset, root), "--space", str(root.parent / "space.json"),
                                              "--pruning", "none", *more])


@pytest.fixture(scope="module")
def searched(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("search") / "out"
    assert search(dataset, root, "--n_trials", "3") == 0
    return root


def test_each_trial_is_an_ordinary_run_given_its_sampled_flags(searched):
    table = (searched / "trials.md").read_text()
    assert table.count("| complete |") == 3
    for number in range(3):
        folder = searched / f"trial-{number:03d}"
        line = next(line for line in table.splitlines() if line.endswith(f"| {folder.name} |"))
        given = dict(zip(*[iter(shlex.split(line.split("`")[1]))] * 2, strict=True))
        args = torch.load(folder / "training_args.bin", weights_only=False)
        assert args.label_smoothing_factor == float(given["--label_smoothing_factor"])
        first_epoch = next(e for e in json.loads((folder / "trainer_state.json").read_text())["log_history"]
                           if "stage" in e)
        assert float(first_epoch["lr_head"]) == float(given["--stage_lrs"].split(",")[0])
        results = json.loads((folder / "all_results.json").read_text())
        accuracy = results[f"{results['eval_split']}_accuracy"]
        assert f"| {100 * accuracy:.2f}% |" in line, "the trial's value is its run's validation accuracy"


def test_the_best_command_is_the_best_trials_run_as_a_finetune_command(searched, capsys):
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{searched / 'search.db'}")
    command = shlex.split((searched / "best_command.txt").read_text())
    assert command[:3] == ["accelerate", "launch", "scripts/finetune.py"]
    assert command[-4:] == study.best_trial.user_attrs["flags"]
    parse_arguments(command[3:])  # a command finetune.py accepts


def test_a_second_call_continues_the_search_and_a_changed_one_is_refused(searched, dataset, capsys):
    assert search(dataset, searched, "--n_trials", "4") == 0
    assert sorted(p.name for p in searched.glob("trial-*")) == [f"trial-{n:03d}" for n in range(4)]
    assert "best: trial" in capsys.readouterr().out
    assert search(dataset, searched, "--n_trials", "5", "--seed", "3") == 2
    assert "holds a search started with other flags" in capsys.readouterr().err
    assert not (searched / "trial-004").exists()


def test_a_pruned_trial_stops_after_the_epoch_it_was_pruned_at(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda trial: trial.number == 1)
    assert search(dataset, tmp_path / "out", "--n_trials", "2") == 0
    table = (tmp_path / "out" / "trials.md").read_text()
    assert "| 0 | complete |" in table and "| 1 | pruned |" in table
    epochs = [json.loads((tmp_path / "out" / f"trial-00{n}" / "all_results.json").read_text())["trained_epochs"]
              for n in (0, 1)]
    assert epochs == [3, 1]


@pytest.mark.parametrize(("space", "more", "message"), [
    ({"lr_typo": {"choices": [1]}}, [], "the space's --lr_typo 1"),
    ({"stage_lrs": {"choices": ["1e-3,1e-4,1e-5", "1e-3,1e-4"]}}, [], "the space's --stage_lrs 1e-3,1e-4: "),
    ({"label_smoothing_factor": {"low": 0.2, "high": 0.1}}, [], "a range needs low < high"),
    ({"label_smoothing_factor": {"low": 0.5, "high": 1.5}}, [], "--label_smoothing_factor must be in [0, 1)"),
    ({"seed": {"choices": [1, 2]}}, [], "other than output_dir and seed"),
    (SPACE, ["--pruning", "hyperband"], "--pruning must be one of median, none"),
    (SPACE, ["--n_trials", "0"], "--n_trials must be at least 1"),
    (SPACE, ["--push_to_hub"], "--push_to_hub: not for a search (push the best trial's folder"),
])
def test_a_bad_space_or_search_flag_is_refused_before_any_data_loads(tmp_path, capsys, space, more, message):
    (tmp_path / "space.json").write_text(json.dumps(space))
    argv = [*TINY, "--dataset_name", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "out"), "--space",
            str(tmp_path / "space.json"), *more]
    assert load_script("search").search_main(argv) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("recipe, rates", [("staged", "stage_lrs"), ("full", "learning_rate"),
                                           ("fast", "learning_rate")])
def test_the_default_space_takes_the_rates_as_the_recipe_does(tmp_path, recipe, rates):
    space = SearchArguments().space_for(recipes.get(recipe))
    assert set(space) == {rates, "label_smoothing_factor", "augment", "mixup_alpha"}
    shared = [flag for index, flag in enumerate(TINY)  # the tiny run's flags but its stages and recipe
              if flag not in ("--stage_epochs", "--recipe") and TINY[index - 1] not in ("--stage_epochs", "--recipe")]
    check_space(space, [*shared, "--dataset_name", str(tmp_path / "absent"), "--recipe", recipe], str(tmp_path / "o"))


def test_the_search_flags_and_the_output_folder_are_taken_out_of_the_trials_flags():
    argv = ["--n_trials", "3", "--output_dir", "o", "--seed=4", "--space=s.json", "--recipe", "staged"]
    assert base_flags(argv, {"n_trials", "space"}) == (["--seed=4", "--recipe", "staged"], "o")


def test_a_folder_another_search_holds_is_refused_and_left_as_it_was(dataset, tmp_path, capsys):
    import socket
    import subprocess
    import sys

    root = tmp_path / "out"
    root.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (root / ".run.lock").write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(),
                                                     "started": "2026-12-07 01:00:00"}))
        assert search(dataset, root, "--n_trials", "1") == 2
    finally:
        other.kill()
    assert f"is in use by another run (pid {other.pid}" in capsys.readouterr().err
    assert sorted(path.name for path in root.iterdir()) == [".run.lock"], "nothing of a second search written"


def test_a_stopped_search_exits_as_a_stopped_run_and_its_table_has_the_trial(dataset, tmp_path, capsys, monkeypatch):
    import signal

    import training.cli

    monkeypatch.setattr(training.cli, "finetune_main", lambda argv, callbacks=(): 128 + signal.SIGTERM)
    root = tmp_path / "out"
    assert search(dataset, root, "--n_trials", "2") == 128 + signal.SIGTERM
    assert "the search was stopped by SIGTERM" in capsys.readouterr().err
    assert "| 0 | fail |" in (root / "trials.md").read_text()
    assert not (root / ".run.lock").exists(), "the lock is released"
