"""The transfer study's parts: the plain ResNet, identity CBAM, a saved model as backbone weights, class subsets,
and the study script end to end on tiny data."""

import json
import statistics
from collections import Counter

import numpy as np
import pytest
import tiny_run
import torch
import torchvision
from helpers import hub_layout_folder, image_folder, saved_to_disk, tiny_dataset
from PIL import Image

import training.images
import training.transforms
from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.backbones import load_backbone_weights
from training.cli import finetune_main
from training.data import DataArguments, DataError, labels_of, load_image_data
from training.device_data import DeviceData
from training.study import (
    STUDY_RUN,
    StudyArguments,
    StudyError,
    row_flags,
    run_result,
    run_study,
    seed_list,
    study_main,
    study_rows,
)
from training.study_report import results_table, summarise

torch.backends.mkldnn.deterministic = True


def model(**config) -> ResNetCBAMForImageClassification:
    return ResNetCBAMForImageClassification(ResNetCBAMConfig(**config)).eval()


def test_the_plain_resnet_is_torchvisions_resnet18():
    reference = torchvision.models.resnet18(num_classes=10).eval()
    plain = model(cbam_placement="none", stem="imagenet", image_size=64)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in reference.parameters())
    assert plain.parameter_groups()["cbam"] == [] and plain.cbam_names == []
    weights = reference.state_dict()
    plain.resnet_cbam.backbone.load_state_dict({k: v for k, v in weights.items() if not k.startswith("fc.")})
    plain.classifier.load_state_dict({"weight": weights["fc.weight"], "bias": weights["fc.bias"]})
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x).logits, reference(x), rtol=0, atol=0)
        assert plain(x, output_attentions=True).channel_attentions == ()


def _saved(tmp_path, name, **config):
    source = model(**config)
    source.save_pretrained(tmp_path / name)
    return source, tmp_path / name


@pytest.mark.parametrize("placement", ["stage", "block"])
def test_identity_cbam_computes_what_the_plain_network_computes_and_learns(tmp_path, placement):
    plain, folder = _saved(tmp_path, "plain", cbam_placement="none")
    gated = model(cbam_placement=placement, cbam_init="identity")
    report = load_backbone_weights(gated, folder)
    assert not report.dropped and sorted(report.skipped) == ["classifier.bias", "classifier.weight"]
    gated.classifier.load_state_dict(plain.classifier.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gated(x).logits, plain(x).logits, rtol=0, atol=0)
        assert not torch.equal(model(cbam_placement=placement)(x).logits, plain(x).logits)  # the paper's does not
    gated.train()
    optimizer = torch.optim.SGD(gated.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        gated(x, labels=torch.tensor([0, 1, 2, 3])).loss.backward()
        optimizer.step()
    cbam = [(n, p) for n, p in gated.named_parameters() if ".cbam" in n or n.startswith("resnet_cbam.cbam")]
    gates = [p for n, p in cbam if n.endswith("gate")]
    assert len(gates) == len(gated.cbam_names) and all(g.item() != 0 for g in gates)
    assert all(p.grad.abs().sum() > 0 for n, p in cbam), "every CBAM parameter gets a gradient once the gate opens"


def test_identity_gates_start_at_zero_and_survive_save_and_reload(tmp_path):
    gated, folder = _saved(tmp_path, "gated", cbam_init="identity")
    assert all(p.item() == 0 for n, p in gated.named_parameters() if n.endswith("gate"))
    with torch.no_grad():
        gated.resnet_cbam.cbam.layer2.gate.fill_(0.5)
    gated.save_pretrained(folder)
    again = ResNetCBAMForImageClassification.from_pretrained(folder)
    assert again.config.cbam_init == "identity" and again.resnet_cbam.cbam.layer2.gate.item() == 0.5


@pytest.mark.parametrize("as_file", [False, True])
def test_a_saved_model_of_this_project_as_backbone_weights(tmp_path, as_file):
    source, folder = _saved(tmp_path, "pretrained", cbam_placement="none", stem="imagenet", image_size=64,
                            num_labels=5)
    target = model(num_labels=3)
    report = load_backbone_weights(target, folder / "model.safetensors" if as_file else folder)
    own, theirs = target.resnet_cbam.backbone.state_dict(), source.resnet_cbam.backbone.state_dict()
    assert report.dropped == ["conv1.weight"]
    assert sorted(report.skipped) == ["classifier.bias", "classifier.weight"]
    expected = [k for k in theirs if k != "conv1.weight"]
    assert sorted(report.loaded) == sorted(f"resnet_cbam.backbone.{k}" for k in expected)
    assert all(torch.equal(own[k], theirs[k]) for k in expected)
    assert "resnet_cbam.backbone.conv1.weight" in report.new and "classifier.weight" in report.new
    assert "conv1.weight dropped (the 7x7 ImageNet stem" in str(report)


def test_a_saved_model_with_cbam_skips_its_cbam(tmp_path):
    _, folder = _saved(tmp_path, "with_cbam")
    report = load_backbone_weights(model(cbam_placement="none"), folder)
    assert any(".cbam.layer3." in name for name in report.skipped)
    assert "skipped (classifier, resnet_cbam.cbam.layer1" in str(report)


def test_a_saved_model_of_another_architecture_or_without_weights_is_named(tmp_path):
    _, folder = _saved(tmp_path, "small", depths=[1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"no tensor for 'layer1.1.conv1.weight'.*another architecture"):
        load_backbone_weights(model(), folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty is a folder without model.safetensors"):
        load_backbone_weights(model(), tmp_path / "empty")


NAMES = ["cat", "dog", "ship", "truck"]


def _sources(tmp_path):
    """The same tiny data as each source kind: Hub layout, save_to_disk, image folders."""
    split = tiny_dataset(10, size=(16, 16))
    return {
        "hub": dict(dataset_name=str(hub_layout_folder(tmp_path / "hub", {"train": split}))),
        "disk": dict(dataset_name=str(saved_to_disk(tmp_path / "disk", {"train": split}))),
        "folder": dict(train_dir=str(image_folder(tmp_path / "images", n_per_class=10, size=(16, 16), fmt="PNG"))),
    }


@pytest.mark.parametrize("kind", ["hub", "disk", "folder"])
def test_labels_keep_those_classes_relabelled_in_the_given_order(tmp_path, kind):
    source = _sources(tmp_path)[kind]
    data = load_image_data(DataArguments(**source, labels="truck,cat", validation_split="4", image_size=16))
    assert data.label_names == ["truck", "cat"] and data.id2label == {0: "truck", 1: "cat"}
    assert {name: len(s) for name, s in data.splits.items()} == {"train": 16, "validation": 4}
    assert Counter(labels_of(data.splits["validation"], data.label_column).tolist()) == {0: 2, 1: 2}
    everything = load_image_data(DataArguments(**source, image_size=16))  # every class: the source's own labels
    original = {}
    for split in everything.splits.values():
        rows = split.with_format(None)["__row__"]
        names = [everything.label_names[i] for i in labels_of(split, everything.label_column)]
        original.update(zip(rows, names, strict=True))
    train = data.splits["train"].with_format(None)
    for row, label in zip(train["__row__"], labels_of(train, data.label_column).tolist(), strict=True):
        assert original[row] == data.label_names[label], f"source row {row} was relabelled wrongly"
    pil_labels = [data.splits["train"][i]["labels"] for i in range(len(train))]
    device = DeviceData(data, "none")
    assert device.splits["train"].store.labels.tolist() == pil_labels == labels_of(train, data.label_column).tolist()


def test_an_unknown_label_lists_the_datasets_names_before_any_image_is_decoded(tmp_path, monkeypatch, capsys):
    folder = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10, size=(16, 16))})

    def no_decoding(*args):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(training.images, "decode_image", no_decoding)
    monkeypatch.setattr(training.transforms, "decode_image", no_decoding)
    with pytest.raises(DataError, match=r"--labels: 'horse' not among the classes of .*: cat, dog, ship, truck"):
        load_image_data(DataArguments(dataset_name=str(folder), labels="dog,horse"))
    code = finetune_main(["--dataset_name", str(folder), "--labels", "dog,horse", "--output_dir",
                          str(tmp_path / "out"), "--backbone_weights", "none"])
    assert code == 2 and "'horse' not among the classes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("labels, words", [("dog,,cat", "distinct class names"), ("dog,dog", "distinct class"),
                                           ("dog", r"has 1 class \(dog\)")])
def test_bad_label_lists_are_refused(tmp_path, labels, words):
    folder = hub_layout_folder(tmp_path / "ds", {"train": tiny_dataset(10, size=(16, 16))})
    with pytest.raises(DataError, match=words):
        load_image_data(DataArguments(dataset_name=str(folder), labels=labels))


def test_labels_apply_to_every_split_and_the_card_follows(tmp_path):
    splits = {"train": tiny_dataset(10, size=(16, 16)), "test": tiny_dataset(3, size=(16, 16), seed=7)}
    folder = hub_layout_folder(tmp_path / "ds", splits)
    out = tmp_path / "run"
    code = finetune_main(["--dataset_name", str(folder), "--labels", "ship,dog", "--output_dir", str(out),
                          "--depths", "1,1,1,1", "--image_size", "16", "--backbone_weights", "none",
                          "--per_device_train_batch_size", "8", "--dataloader_num_workers", "0", "--report_to",
                          "none", "--recipe", "full", "--num_train_epochs", "1", "--validation_split", "4"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "ship", "1": "dog"}
    results = json.loads((out / "all_results.json").read_text())
    assert results["label_names"] == ["ship", "dog"] and len(results["test_confusion_matrix"]) == 2
    assert np.sum(results["test_confusion_matrix"]) == 6  # 3 ship and 3 dog test images
    card = (out / "README.md").read_text()
    assert "Classes (2): ship, dog." in card and "16 train images, 4 validation images, 6 test images" in card


# the rows that differ in code path (the others vary an lr, a recipe's stem freezing or CBAM placement, tested
# elsewhere): every one of them twice would make this the suite's longest test
TINY_ROWS = ["scratch-fast", "full-lr0.001", "fine_tune", "staged", "staged-paper-cbam", "staged-kept-stem"]
TINY_STUDY = ["--source_labels", "a,b,c", "--target_labels", "d,e,f", "--pretrain_epochs", "1",
              "--pretrain_image_size", "32", "--pretrain_eval_samples", "6", "--train_per_class", "0",
              "--validation_split", "6", "--stage_epochs", "1,1,1", "--seeds", "2", "--runs", ",".join(TINY_ROWS),
              "--finetune_args",
              "--depths 1,1,1,1 --per_device_train_batch_size 8 --dataloader_num_workers 0 --report_to none "
              "--save_strategy epoch"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    names = ["a", "b", "c", "d", "e", "f"]
    folder = hub_layout_folder(root / "ds", {"train": tiny_dataset(8, size=(16, 16), names=names)})
    argv = ["--dataset_name", str(folder), "--output_dir", str(root / "out"), *TINY_STUDY]
    assert study_main(argv) == 0
    return root / "out", argv


def test_the_study_runs_every_row_once_per_seed_and_writes_its_results(study):
    out, _ = study
    results = json.loads((out / "results.json").read_text())
    assert [row.name for row in study_rows(StudyArguments())] == [
        "scratch-fast", "full-lr0.001", "full-lr0.0001", "fine_tune", "seed-exact", "staged", "staged-paper-cbam",
        "staged-no-cbam", "staged-kept-stem", "staged-lr1e-4-kept-stem", "full-lr0.001-kept-stem",
        "full-lr0.0001-kept-stem", "staged-train-bn-kept-stem", "full-cosine-lr0.0001-kept-stem",
        *(f"{name}-no-cbam" for name in ("staged-kept-stem", "staged-lr1e-4-kept-stem", "full-lr0.001-kept-stem",
                                         "full-lr0.0001-kept-stem", "staged-train-bn-kept-stem",
                                         "full-cosine-lr0.0001-kept-stem"))]
    names = TINY_ROWS
    assert [(run["seed"], run["name"]) for run in results["runs"]] == [(s, n) for s in (42, 43) for n in names]
    for run in results["runs"]:
        assert [e["epoch"] for e in run["epochs"]] == [1, 2, 3]
        assert run["final_accuracy"] == run["epochs"][-1]["accuracy"]
        assert run["split_sizes"] == {"train": 18, "validation": 6}
        assert run["command"].startswith("accelerate launch scripts/finetune.py --dataset_name")
    by_name = {run["name"]: run for run in results["runs"] if run["seed"] == 42}
    assert by_name["staged"]["stage_ends"] == [1, 2, 3] and by_name["fine_tune"]["stage_ends"] == [1, 3]
    assert [e["stage"] for e in by_name["fine_tune"]["epochs"]] == [1, 2, 2]
    assert results["pretrain"]["split_sizes"] == {"train": 18, "validation": 6}
    staged = by_name["staged"]["command"]
    # the tutorial's rates, pinned: `staged` itself ends at 1e-4 since the 50-epoch study
    assert " --seed 42 --recipe staged --stage_epochs 1,1,1 --stage_lrs 0.001,0.0001,1e-05 --cbam_init" in staged
    rows = {row["name"]: row for row in results["rows"]}
    assert list(rows) == names and all(row["seeds"] == [42, 43] for row in rows.values())
    seeds = [run for run in results["runs"] if run["name"] == "full-lr0.001"]
    assert rows["full-lr0.001"]["final_accuracy"] == pytest.approx(sum(r["final_accuracy"] for r in seeds) / 2)
    assert "difference" not in rows["staged"] and rows["full-lr0.001"]["difference"]["seeds"] == 2
    # the backbone every pretrained row loads is a torchvision ResNet file, the pretraining's weights
    weights = torch.load(out / "resnet18-source.pth")
    torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=3) \
        .load_state_dict(weights)
    assert f"--backbone_weights {out / 'resnet18-source.pth'}" in staged
    config = json.loads((out / "seed42" / "staged" / "config.json").read_text())
    assert config["cbam_init"] == "identity" and config["id2label"] == {"0": "d", "1": "e", "2": "f"}
    assert json.loads((out / "seed42" / "staged-paper-cbam" / "config.json").read_text())["cbam_init"] == "default"
    assert json.loads((out / "pretrain" / "config.json").read_text())["cbam_placement"] == "none"
    assert "conv1.weight dropped" in (out / "seed42" / "staged" / "README.md").read_text()
    kept = json.loads((out / "seed43" / "staged-kept-stem" / "config.json").read_text())
    assert kept["stem"] == "imagenet" and "conv1.weight dropped" not in \
        (out / "seed43" / "staged-kept-stem" / "README.md").read_text()
    assert "Initialisation: random" in (out / "seed42" / "scratch-fast" / "README.md").read_text()
    table = (out / "results.md").read_text()
    assert table.count("\n| ") == len(names) and "Pretraining:" in table and "(of 42, 43)" in table
    assert all(line.split(" | ")[1] == "2" for line in table.splitlines()[2:2 + len(names)])
    assert all(f"- `{name}`: " in table for name in names)
    assert Image.open(out / "accuracy.png").size[0] > 500


def test_the_toolbox_adds_each_option_to_the_base_row_and_reuses_its_runs(study):
    out, argv = study
    toolbox = [*argv[:argv.index("--runs")], "--runs", "staged-kept-stem,staged-kept-stem+mixup",
               *argv[argv.index("--runs") + 2:], "--toolbox", "true", "--toolbox_base", "staged-kept-stem"]
    base_record = (out / "seed42" / "staged-kept-stem" / "trainer_state.json").stat().st_mtime
    assert study_main(toolbox) == 0
    assert (out / "seed42" / "staged-kept-stem" / "trainer_state.json").stat().st_mtime == base_record  # reused
    results = json.loads((out / "toolbox" / "results.json").read_text())
    assert results["reference"] == "staged-kept-stem"
    assert [(run["seed"], run["name"]) for run in results["runs"]] == [
        (s, n) for s in (42, 43) for n in ("staged-kept-stem", "staged-kept-stem+mixup")]
    mixup = json.loads((out / "seed43" / "staged-kept-stem+mixup" / "study_run.json").read_text())["argv"]
    assert mixup[mixup.index("--mixup_alpha") + 1] == "0.2" and "--stem" in mixup
    rows = {row["name"]: row for row in results["rows"]}
    assert rows["staged-kept-stem+mixup"]["difference"]["seeds"] == 2 and "difference" not in rows["staged-kept-stem"]
    assert "vs `staged-kept-stem`" in (out / "toolbox" / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["reference"] == "staged"  # the study's own left alone
    assert study_main([*toolbox, "--toolbox_base", "bogus"]) == 2


def test_the_summary_pairs_each_seed_with_the_reference_and_says_when_a_difference_is_clear():
    def run(name, seed, final):
        return {"name": name, "seed": seed, "description": name, "final_accuracy": final, "best_accuracy": final,
                "wall_seconds": 60.0, "stage_ends": [1], "accuracy_at_stage_ends": [final],
                "epochs": [{"epoch": 1, "stage": 1, "accuracy": final}]}

    reference, steady, noisy = [0.5, 0.6, 0.7], [0.55, 0.66, 0.74], [0.6, 0.5, 0.75]
    runs = [run(name, seed, finals[i]) for name, finals in (("staged", reference), ("steady", steady),
                                                            ("noisy", noisy)) for i, seed in enumerate((1, 2, 3))]
    rows = {row["name"]: row for row in summarise(runs, ["staged", "steady", "noisy"])}
    assert rows["staged"]["final_accuracy"] == pytest.approx(0.6) and rows["staged"]["final_std"] == pytest.approx(0.1)
    # paired: the rows differ by 5, 6 and 4 points, though the seeds spread the accuracies over 20
    assert rows["steady"]["difference"]["mean"] == pytest.approx(0.05)
    assert rows["steady"]["difference"]["standard_error"] == pytest.approx(0.01 / 3 ** 0.5)
    assert rows["steady"]["difference"]["clear"]
    assert rows["noisy"]["difference"]["mean"] == pytest.approx(0.05 / 3) and not rows["noisy"]["difference"]["clear"]
    assert rows["steady"]["epochs"][0]["spread"] == pytest.approx(statistics.stdev(steady))


def test_a_row_without_cbam_says_what_cbam_adds_to_its_twin_seed_by_seed():
    def run(name, seed, final):
        return {"name": name, "seed": seed, "description": f"about {name}", "final_accuracy": final,
                "best_accuracy": final, "wall_seconds": 60.0, "stage_ends": [1], "accuracy_at_stage_ends": [final],
                "epochs": [{"epoch": 1, "stage": 1, "accuracy": final}]}

    runs = [run("full", seed, final) for seed, final in ((1, 0.80), (2, 0.70), (3, 0.75))]
    runs += [run("full-no-cbam", seed, final) for seed, final in ((1, 0.79), (2, 0.68), (3, 0.75))]
    rows = {row["name"]: row for row in summarise(runs, ["full", "full-no-cbam"], "full")}
    gain = rows["full-no-cbam"]["cbam_gain"]
    assert gain["mean"] == pytest.approx(0.01) and gain["seeds"] == 3 and not gain["clear"]
    assert "cbam_gain" not in rows["full"]
    table = results_table({"rows": list(rows.values()), "reference": "full", "seeds": [1, 2, 3]})
    assert "What CBAM adds" in table and "`full` +1.0 ± 0.6" in table
    assert "- `full-no-cbam`: about full-no-cbam" in table


@pytest.mark.parametrize("text, seeds", [("3", [42, 43, 44]), ("1", [42]), ("7,1", [7, 1])])
def test_seeds_are_a_count_or_a_list(text, seeds):
    assert seed_list(text) == seeds


def test_a_second_study_call_reuses_finished_runs_and_refuses_changed_ones(study):
    out, argv = study
    calls = []
    (args,) = __import__("transformers").HfArgumentParser(StudyArguments).parse_args_into_dataclasses(argv)
    run_study(args, lambda a: calls.append(a) or 1)
    assert calls == [], "a finished run with the same flags is reused, not rerun"
    before = (out / "seed42" / "staged" / "model.safetensors").read_bytes()
    changed = [*argv[:-1], argv[-1] + " --seed 3"]
    (args,) = __import__("transformers").HfArgumentParser(StudyArguments).parse_args_into_dataclasses(changed)
    with pytest.raises(StudyError, match="pretrain holds a run made with other flags"):
        run_study(args, lambda a: calls.append(a) or 0)
    assert calls == [] and (out / "seed42" / "staged" / "model.safetensors").read_bytes() == before


def test_report_only_runs_nothing_and_tables_each_row_over_the_seeds_it_has(study):
    out, argv = study
    more = ["--seeds", "42,43,44", "--runs", "staged,staged-no-cbam", "--report_only", "true"]
    (args,) = __import__("transformers").HfArgumentParser(StudyArguments).parse_args_into_dataclasses([*argv, *more])
    results = run_study(args, lambda argv: pytest.fail(f"ran {argv}"))
    assert [row["name"] for row in results["rows"]] == ["staged"] and results["rows"][0]["seeds"] == [42, 43]
    assert "pretrain" in results and "(of 42, 43, 44)" in (out / "results.md").read_text()


def test_the_rows_at_the_defaults_length_evaluate_every_fifth_epoch_and_pair_with_cbam():
    args = StudyArguments(stage_epochs="5,15,30", eval_every=5, reference="staged-kept-stem")
    rows = {row.name: row for row in study_rows(args)}
    flags = row_flags(args, rows["staged-train-bn-kept-stem"], 42)
    assert flags[flags.index("--eval_strategy"):][:4] == ["--eval_strategy", "steps", "--eval_steps", "0.1"]  # 5, 10..
    assert "--train_bn" in flags and flags[flags.index("--stage_epochs") + 1] == "5,15,30"
    cosine = rows["full-cosine-lr0.0001-kept-stem"].flags
    assert cosine[cosine.index("--lr_scheduler_type") + 1] == "cosine" and "--warmup_steps" in cosine
    plain = rows["full-lr0.0001-kept-stem-no-cbam"].flags
    assert plain == (*(f for f in rows["full-lr0.0001-kept-stem"].flags if f not in ("--cbam_init", "identity")),
                     "--cbam_placement", "none")
    assert "--eval_strategy" not in row_flags(StudyArguments(), rows["staged"], 42)  # every epoch by default


def test_evaluations_every_few_epochs_still_give_every_stage_end_and_the_whole_time(dataset, tmp_path):
    out = tmp_path / "out"
    argv = [*tiny_run.TINY, "--dataset_name", str(dataset), "--validation_split", "8", "--output_dir", str(out),
            "--stage_epochs", "2,2,2", "--eval_strategy", "steps", "--eval_steps", f"{2 / 6:g}", "--save_strategy",
            "no"]
    tiny_run.run(argv[len(tiny_run.TINY):])
    (out / STUDY_RUN).write_text(json.dumps({"argv": argv}))
    result = run_result("staged", "staged", out, [2, 4, 6])
    assert [(e["epoch"], e["stage"]) for e in result["epochs"]] == [(2, 1), (4, 2), (6, 3)]
    assert None not in result["accuracy_at_stage_ends"]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert result["wall_seconds"] > 0 and len([e for e in history if "epoch_time" in e]) == 3


@pytest.mark.parametrize("flags, words", [(["--stage_epochs", "2,6"], "three positive integers"),
                                          (["--stage_epochs", "5,15,30", "--eval_every", "4"],
                                           "must divide every stage's end (epochs 5, 20, 50)"),
                                          (["--reference", "bogus"], "--reference: unknown row bogus"),
                                          (["--runs", "staged,bogus"], "unknown rows bogus"),
                                          (["--full_lrs", "0"], "positive learning rates"),
                                          (["--train_per_class", "-1"], "--train_per_class must be at least 0"),
                                          (["--seeds", "0"], "--seeds must be a count of at least 1"),
                                          (["--seeds", "4,4"], "distinct non-negative seeds"),
                                          (["--seeds", "42"], "--seeds 42 is a count: 42 seeds (42 to 83) for "
                                                              "every row; give a count up to 10 (--seeds 1 is the "
                                                              "seed 42 alone) or list the seeds (e.g. 42,43)"),
                                          (["--seeds", "three"], "--seeds must be comma-separated int")])
def test_bad_study_flags_are_refused(tmp_path, capsys, flags, words):
    assert study_main(["--output_dir", str(tmp_path / "out"), *flags]) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "out").exists()
