"""The command line end to end: output folder with plots and a card holding the run's numbers; Hub push edges."""

import json
from pathlib import Path

import pytest
from helpers import hub_layout_folder, load_script, tiny_dataset
from huggingface_hub import HfApi
from tiny_run import TINY

from training import cli
from training.hub import IGNORE, HubError, check_push_access, push_folder
from training.metrics import classification_metrics
from training.plots import loss_points


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    dataset = hub_layout_folder(root / "ds", {"train": tiny_dataset(10, size=(16, 16)),
                                              "test": tiny_dataset(3, size=(16, 16), seed=500)})
    output_dir = root / "out"
    code = cli.finetune_main([*TINY, "--dataset_name", str(dataset), "--validation_split", "8",
                              "--output_dir", str(output_dir), "--save_strategy", "no"])
    assert code == 0
    return output_dir


def test_the_folder_holds_model_results_plots_and_card(finished):
    names = {p.name for p in finished.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_resnet_cbam.py", "configuration_resnet_cbam.py",
            "preprocessor_config.json", "README.md", "all_results.json", "trainer_state.json", "plots"} <= names
    for plot in ("loss.png", "curves.png", "confusion_matrix.png", "attention_0.png", "attention_3.png"):
        assert (finished / "plots" / plot).read_bytes()[:4] == b"\x89PNG"


def test_final_evaluation_is_on_the_test_split_and_matches_a_direct_count(finished):
    results = json.loads((finished / "all_results.json").read_text())
    assert results["eval_split"] == "test"
    confusion = results["test_confusion_matrix"]
    assert sum(map(sum, confusion)) == 12
    assert results["test_accuracy"] == sum(confusion[i][i] for i in range(4)) / 12
    per_class = [confusion[i][i] / sum(confusion[i]) for i in range(4)]
    assert list(results["test_per_class_accuracy"].values()) == pytest.approx(per_class)


def test_the_card_holds_the_runs_real_numbers(finished):
    card = (finished / "README.md").read_text()
    results = json.loads((finished / "all_results.json").read_text())
    history = json.loads((finished / "trainer_state.json").read_text())["log_history"]
    assert f"**test accuracy: {100 * results['test_accuracy']:.2f}%** (12 test images)" in card
    for name, value in results["test_per_class_accuracy"].items():
        assert f"| {name} | {100 * value:.2f}% |" in card
    for entry in (e for e in history if "stage" in e):
        assert f"| {int(entry['epoch'])} | {entry['stage']} | {100 * entry['train_accuracy']:.2f}% |" in card
    assert "| 2 | 1 | stem, layer3, layer4, cbam, head at lr 0.0001 |" in card
    assert "pipeline_tag: image-classification" in card and "plots/curves.png" in card
    assert "### Attention maps" in card and "![attention map](plots/attention_0.png)" in card


def test_a_local_dataset_is_not_named_as_a_hub_dataset_in_the_card_metadata(finished):
    header = (finished / "README.md").read_text().split("---")[1]
    assert "datasets:" not in header and "model-index" not in header and "pipeline_tag: image-classification" in header


def test_the_loss_plot_falls_back_to_epochs_on_a_run_shorter_than_logging_steps():
    history = [{"loss": 2.3, "step": 5}, {"stage": 1, "eval_loss": 2.2, "train_loss": 2.25, "step": 8, "epoch": 1},
               {"stage": 1, "eval_loss": 2.1, "train_loss": 2.15, "step": 16, "epoch": 2}]
    assert loss_points(history) == ([8, 16], [2.25, 2.15], "Training loss per epoch (fewer steps than "
                                                           "--logging_steps)")
    history.insert(1, {"loss": 2.2, "step": 10})
    assert loss_points(history)[:2] == ([5, 10], [2.3, 2.2])


def test_metrics_are_evaluate_metrics_and_match_a_direct_computation():
    predictions, references = [0, 2, 1, 1, 2, 0, 0], [0, 2, 2, 1, 1, 0, 1]
    result = classification_metrics().compute(predictions=predictions, references=references, num_classes=3)
    assert result["accuracy"] == sum(p == r for p, r in zip(predictions, references, strict=True)) / 7
    assert result["confusion_matrix"] == [[2, 0, 0], [1, 1, 1], [0, 1, 1]]
    assert result["per_class_accuracy"] == pytest.approx([1.0, 1 / 3, 0.5])


@pytest.mark.parametrize("token, message", [(None, "cannot push to the Hub: no valid token"),
                                            ("hf_not_a_real_token", "HF_HUB_OFFLINE is set")])
def test_push_without_a_usable_hub_fails_before_any_loading(tmp_path, capsys, monkeypatch, token, message):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = ["--push_to_hub", "--hub_model_id", "someone/model"] + (["--hub_token", token] if token else [])
    code = cli.finetune_main(["--dataset_name", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "o"), *hub])
    assert code == 2
    assert message in capsys.readouterr().err
    with pytest.raises(HubError, match="needs --hub_model_id"):
        check_push_access(None)


def test_a_failed_push_loses_nothing_and_says_how_to_retry(tmp_path, capsys, monkeypatch):
    dataset = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10, size=(16, 16))})
    monkeypatch.setattr(cli, "check_push_access", lambda *args: "someone/model")  # the Hub said yes before training

    def refuse(self, **kwargs):
        raise ConnectionError("the network went away")

    monkeypatch.setattr(HfApi, "upload_folder", refuse)
    output_dir = tmp_path / "out"
    code = cli.finetune_main([*TINY, "--dataset_name", str(dataset), "--validation_split", "8", "--output_dir",
                              str(output_dir), "--save_strategy", "no", "--push_to_hub", "--hub_model_id",
                              "someone/model"])
    assert code == 1
    err = capsys.readouterr().err
    assert "the push to someone/model failed (the network went away)" in err
    assert f"python scripts/push.py {output_dir} --hub_model_id someone/model" in err
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()


def test_push_folder_uploads_the_finished_folder_without_checkpoints(finished, monkeypatch):
    calls = []
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kwargs: calls.append(kwargs) or "commit-url")
    assert push_folder(finished, "someone/model") == "commit-url"
    assert calls[0]["folder_path"] == str(finished) and calls[0]["repo_id"] == "someone/model"
    assert calls[0]["ignore_patterns"] == IGNORE and "checkpoint-*" in IGNORE
    with pytest.raises(HubError, match="not a finished model folder: config.json, model.safetensors, README.md"):
        push_folder(finished / "plots", "someone/model")


def test_push_script_refuses_without_a_token_and_names_the_reason(finished, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_TOKEN", None)
    done = subprocess.run([sys.executable, str(Path(cli.__file__).parents[1] / "scripts" / "push.py"), str(finished),
                           "--hub_model_id", "someone/model"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "cannot push to the Hub: no valid token" in done.stderr


def test_compare_runs_summary_gives_each_runs_final_figures_and_own_flags(finished, tmp_path, capsys):
    import shutil

    compare = load_script("compare_runs")
    results = json.loads((finished / "all_results.json").read_text())
    for name, extra in (("a", "--seed 1"), ("b", "--seed 2 --tta flip")):
        shutil.copytree(finished, tmp_path / name, ignore=shutil.ignore_patterns("*.safetensors", "space", "plots"))
        (tmp_path / name / "run.json").write_text(json.dumps(
            {"command": f"accelerate launch scripts/finetune.py --recipe fast --output_dir runs/{name} {extra}"}))
    assert compare.main(["--summary", "true", str(tmp_path / "a"), f"{tmp_path / 'b'}=second"]) == 0
    out = capsys.readouterr().out
    assert "every run: `accelerate launch scripts/finetune.py --recipe fast`, plus its flags" in out
    accuracy, minutes = 100 * results["test_accuracy"], results["train_wall_seconds"] / 60
    assert f"| a | {accuracy:.2f}% (test) | {minutes:.1f} |" in out and "| `--seed 1` |" in out
    assert f"| second | {accuracy:.2f}% (test) | {minutes:.1f} |" in out and "| `--seed 2 --tta flip` |" in out
