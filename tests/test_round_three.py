"""Bad input, round three: outputs never written over each other, a foreign model refused by every script that
takes one, data flags and device-resident refusals that name what to change."""

import json
from pathlib import Path

import pytest
from helpers import image_folder, load_script, random_image

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.backbones import load_backbone_weights
from training.data import DataArguments, DataError, load_image_data
from training.device_data import ImageStore
from training.inference import output_stems


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "model"
    config = ResNetCBAMConfig(depths=[1, 1, 1, 1], image_size=16, id2label={0: "a", 1: "b"})
    ResNetCBAMForImageClassification(config).save_pretrained(folder)
    return folder


def test_attention_maps_of_inputs_with_the_same_name_are_all_kept(model_dir, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        random_image((20, 20), seed=len(folder)).save(tmp_path / "in" / folder / "rgb_0.png")
    random_image((20, 20), seed=7).save(tmp_path / "in" / "other.png")
    out = tmp_path / "out"
    code = load_script("attention_maps").main(["--model", str(model_dir), "--out_dir", str(out),
                                               str(tmp_path / "in" / "a"), str(tmp_path / "in" / "b"),
                                               str(tmp_path / "in" / "other.png")])
    assert code == 0, capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == ["a_rgb_0_attention.png", "b_rgb_0_attention.png",
                                                         "other_attention.png"]


def test_output_stems_are_distinct_and_plain_where_they_can_be(tmp_path):
    files = [tmp_path / "x" / "p.png", tmp_path / "y" / "z" / "p.png", tmp_path / "q.png"]
    assert output_stems(files) == {files[0]: "x_p", files[1]: "y_z_p", files[2]: "q"}


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("foreign")
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet", "depths": [2, 2, 2, 2]}))
    return folder


@pytest.mark.parametrize("script, extra", [("summary", []), ("predict", ["image.png"]),
                                           ("evaluate_model", []), ("attention_maps", ["image.png"]),
                                           ("export_onnx", ["--output", "m.onnx"])])
def test_every_script_that_takes_a_model_refuses_a_foreign_one_with_the_same_line(script, extra, foreign_model,
                                                                                  tmp_path, capsys):
    random_image((20, 20)).save(tmp_path / "image.png")
    extra = [str(tmp_path / value) if value.endswith((".png", ".onnx")) else value for value in extra]
    assert load_script(script).main(["--model", str(foreign_model), *extra]) == 2
    assert f"--model {foreign_model} is a resnet model, not a ResNet-CBAM (model_type 'resnet_cbam')" in \
        capsys.readouterr().err


@pytest.mark.parametrize("flag", ["max_train_samples", "max_eval_samples"])
def test_a_sample_count_below_one_names_its_flag(flag):
    with pytest.raises(DataError, match=f"--{flag} must be at least 1"):
        DataArguments(**{flag: 0})


def test_the_device_resident_refusal_names_the_file_and_the_flag(tmp_path):
    folder = image_folder(tmp_path / "photos", n_per_class=2, names=["a", "b"], size=(40, 30))
    data = load_image_data(DataArguments(train_dir=str(folder), validation_split="2"))
    with pytest.raises(DataError, match=r"train row \d+ \(.*photos/./\d\.jpeg\): image is 40x30, not 16x16; .*"
                                        r"--data_on_device false"):
        ImageStore(data.splits["train"], "train", data.image_column, data.label_column, size=16)


def test_overwrite_deletes_only_what_a_run_writes_and_names_what_it_keeps(dataset, tmp_path, caplog):
    from helpers import flags
    from tiny_run import TINY

    from training.cli import finetune_main

    out = tmp_path / "out"
    run = [*TINY, *flags(dataset, out), "--save_strategy", "epoch", "--stage_epochs", "1,1,1"]
    assert finetune_main(run) == 0
    (out / "notes.txt").write_text("mine")
    (out / "mydata").mkdir()
    (out / "mydata" / "x.csv").write_text("1,2")
    caplog.clear()
    assert finetune_main([*run, "--overwrite_output_dir"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "mydata" / "x.csv").is_file()
    assert "kept what this project did not write: mydata/, notes.txt" in caplog.text
    assert (out / "run_complete.json").is_file()


def test_overwrite_refuses_a_folder_that_is_not_a_run_and_the_working_directory(dataset, tmp_path, capsys,
                                                                                 monkeypatch):
    from helpers import flags
    from tiny_run import TINY

    from training.cli import finetune_main

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "README.md").write_text("my project")
    (foreign / "model.safetensors").write_bytes(b"not ours")
    assert finetune_main([*TINY, *flags(dataset, foreign), "--overwrite_output_dir"]) == 2
    assert "is not a run folder of this project" in capsys.readouterr().err
    assert sorted(path.name for path in foreign.iterdir()) == ["README.md", "model.safetensors"]
    monkeypatch.chdir(foreign)
    (foreign / "config.json").write_text(json.dumps({"model_type": "resnet_cbam"}))
    assert finetune_main([*TINY, *flags(dataset, Path(".")), "--overwrite_output_dir"]) == 2
    assert "is the working directory or holds the data" in capsys.readouterr().err
    assert (foreign / "README.md").read_text() == "my project"


def test_an_image_nested_inside_a_class_folder_is_named(tmp_path, capsys):
    from training.cli import finetune_main

    folder = image_folder(tmp_path / "photos", n_per_class=4, names=["a", "b"])
    (folder / "a" / "sub" / "subsub").mkdir(parents=True)
    random_image((40, 30)).save(folder / "a" / "sub" / "subsub" / "nested.png")
    code = finetune_main(["--train_dir", str(folder), "--output_dir", str(tmp_path / "out"), "--backbone_weights",
                          "none"])
    assert code == 2
    assert "a/sub/subsub/nested.png is in a sub-folder of the class folder a/" in capsys.readouterr().err


def test_an_undecodable_image_met_in_training_is_one_line_naming_the_file_and_the_flag(dataset, tmp_path, capsys):
    from helpers import truncated_jpeg
    from tiny_run import TINY

    from training.cli import finetune_main

    folder = image_folder(tmp_path / "photos", n_per_class=6, names=["a", "b"])
    (folder / "a" / "5.jpeg").write_bytes(truncated_jpeg())
    code = finetune_main([*TINY, "--train_dir", str(folder), "--validation_split", "2", "--output_dir",
                          str(tmp_path / "out"), "--dataloader_num_workers", "1", "--save_strategy", "no"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "a/5.jpeg): " in err and "--verify_images" in err and "Traceback" not in err and "Caught" not in err


def test_a_transformers_resnet_folder_loads_as_a_backbone_and_computes_the_same_features(tmp_path):
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    theirs = ResNetForImageClassification(ResNetConfig(layer_type="basic", depths=[1, 1, 1, 1], embedding_size=64,
                                                       hidden_sizes=[64, 128, 256, 512], num_labels=3)).eval()
    theirs.save_pretrained(tmp_path / "resnet")
    ours = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], stem="imagenet",
                                                             cbam_placement="none")).eval()
    report = load_backbone_weights(ours, tmp_path / "resnet")
    assert "resnet_cbam.backbone.conv1.weight" in report.loaded and sorted(report.skipped) == ["fc.bias", "fc.weight"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs.resnet(x).last_hidden_state
        assert torch.allclose(ours.resnet_cbam(x).last_hidden_state, expected, atol=1e-5)


def test_a_run_stopped_before_its_first_complete_checkpoint_is_started_again_not_resumed(dataset, tmp_path, capsys):
    from helpers import flags
    from tiny_run import TINY

    from training.cli import finetune_main

    out = tmp_path / "out"
    run = [*TINY, *flags(dataset, out), "--save_strategy", "epoch"]
    assert finetune_main(run) == 0
    for name in ("model.safetensors", "README.md", "run_complete.json", "config.json"):
        (out / name).unlink()  # as a kill during the first checkpoint's write leaves it
    for checkpoint in ("checkpoint-8", "checkpoint-12"):
        __import__("shutil").rmtree(out / checkpoint)
    (out / "checkpoint-4" / "run_facts.json").unlink()
    assert finetune_main(run) == 2
    assert "stopped before its first complete checkpoint (checkpoint-4): nothing there can be resumed; start again " \
           "with --overwrite_output_dir" in capsys.readouterr().err
    assert finetune_main([*run, "--overwrite_output_dir"]) == 0
