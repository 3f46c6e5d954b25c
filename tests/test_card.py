"""The model card's metadata as the Hub reads it (huggingface_hub.ModelCard), and no path of this machine in what a
finished run pushes."""

import dataclasses
import json

import pytest
import torch
from helpers import flags
from huggingface_hub import ModelCard
from tiny_run import TINY

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.arguments import parse_arguments
from training.backbones import torchvision_state_dict
from training.cli import finetune_main
from training.hub import base_model
from training.outputs import write_model_card
from training.run import prepare_run, train_and_evaluate

PUSHED_TEXT = ("README.md", "config.json", "all_results.json", "trainer_state.json", "preprocessor_config.json")


@pytest.fixture(scope="module")
def from_local_weights(dataset, tmp_path_factory):
    """A tiny run whose backbone is a local .pth file in torchvision's format, on a local dataset."""
    root = tmp_path_factory.mktemp("card")
    source = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], cbam_placement="none",
                                                               stem="imagenet"))
    torch.save(torchvision_state_dict(source), root / "backbone.pth")
    output_dir = root / "out"
    assert finetune_main([*TINY, *flags(dataset, output_dir, "--save_strategy", "no", "--backbone_weights",
                                        str(root / "backbone.pth"), "--license", "mit")]) == 0
    return root, output_dir


def test_a_local_run_card_names_no_hub_dataset_and_no_base_model(from_local_weights):
    _, output_dir = from_local_weights
    card = ModelCard.load(output_dir / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert "base_model" not in data and "base_model_relation" not in data, "a local file is no Hub model"
    assert "datasets" not in data and "model-index" not in data, "a local dataset is no Hub dataset"
    assert "Initialisation: backbone weights from the local file backbone.pth:" in card.text
    assert "on **ds** (a local dataset)" in card.text
    assert "- transformers " in card.text and "- torch " in card.text and "- resnet-cbam " in card.text
    assert "@inproceedings{woo2018cbam," in card.text and "@inproceedings{he2016resnet," in card.text


def test_no_path_of_this_machine_in_what_is_pushed(from_local_weights, dataset):
    root, output_dir = from_local_weights
    for name in PUSHED_TEXT:
        text = (output_dir / name).read_text()
        for path in (root, dataset, output_dir):
            assert str(path) not in text and str(path.resolve()) not in text, f"{name} holds {path}"


def test_a_hub_dataset_and_base_model_are_metadata_the_hub_reads(dataset, tmp_path):
    args = parse_arguments([*TINY, *flags(dataset, tmp_path / "run", "--save_strategy", "no")])
    run, _ = prepare_run(*args)
    record = train_and_evaluate(run)
    record = dataclasses.replace(record, dataset="uoft-cs/cifar10", dataset_name="uoft-cs/cifar10",
                                 dataset_on_hub=True, base_model="timm/resnet18.tv_in1k", output_dir=tmp_path)
    data = ModelCard.load(write_model_card(record, run.trainer.model)).data.to_dict()
    assert data["base_model"] == "timm/resnet18.tv_in1k" and data["base_model_relation"] == "finetune"
    assert data["datasets"] == ["uoft-cs/cifar10"] and data["license"] == "apache-2.0"
    (result,) = data["model-index"][0]["results"]
    assert result["dataset"]["type"] == "uoft-cs/cifar10" and result["dataset"]["split"] == "validation"
    assert result["metrics"][0] == {"type": "accuracy", "value": record.metrics["validation_accuracy"]}
    assert json.loads(json.dumps(data)) == data


def test_base_model_is_the_hub_copy_of_the_weights(tmp_path):
    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(b"")
    assert base_model("torchvision", [2, 2, 2, 2]) == "timm/resnet18.tv_in1k"
    assert base_model("torchvision", [3, 4, 6, 3]) == "timm/resnet34.tv_in1k"
    assert base_model("timm/resnet18.a1_in1k", [2, 2, 2, 2]) == "timm/resnet18.a1_in1k"
    assert base_model(str(weights), [2, 2, 2, 2]) is None
    assert base_model("none", [2, 2, 2, 2]) is None
    assert base_model("none", [2, 2, 2, 2], model_name_or_path="someone/resnet-cbam-cifar10") == \
        "someone/resnet-cbam-cifar10"
    assert base_model("none", [2, 2, 2, 2], model_name_or_path=str(tmp_path)) is None
