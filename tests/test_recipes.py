"""The recipe registry (training/recipes.py): a recipe is one entry, and adding one touches nothing else."""

import pytest
from helpers import assert_follows_schedule, flags
from tiny_run import run

from training import recipes
from training.arguments import build_parser, build_schedule, chosen_recipe, parse_arguments
from training.defaults import wants_pretrained_stem
from training.stages import Schedule, ScheduleError, Stage

TWO_STAGE = recipes.Recipe(
    "two-stage", "the head alone, then everything",
    (Stage(1, {"head": 2e-3}, "head"), Stage(1, recipes.every_group(2e-4), "everything")),
    batch=4, flag_defaults={"label_smoothing_factor": 0.1, "weight_decay": 0.01}, keeps_pretrained_stem=False)


@pytest.fixture
def two_stage(monkeypatch):
    """A recipe added to the registry for one test, as a new recipe is added: one register call."""
    monkeypatch.setattr(recipes, "_REGISTRY", dict(recipes._REGISTRY))
    return recipes.register(TWO_STAGE)


def test_a_registered_recipe_runs_with_its_stages_batch_and_flag_defaults(two_stage, dataset, tmp_path, caplog):
    finished, recorder = run(flags(dataset, tmp_path / "out", "--recipe", "two-stage", "--stage_epochs", "1,1",
                                   "--save_strategy", "no"))
    assert finished.record.schedule == Schedule(two_stage.stages)
    assert_follows_schedule(recorder.steps, finished.record.schedule)
    training_args = finished.trainer.args
    assert training_args.label_smoothing_factor == 0.1 and training_args.weight_decay == 0.01
    model_args, _, stage_args, training_args = parse_arguments(
        ["--recipe", "two-stage", "--scale_lr_with_batch", "true", "--per_device_train_batch_size", "8",
         "--label_smoothing_factor", "0", "--output_dir", str(tmp_path / "o")])
    assert training_args.label_smoothing_factor == 0, "a flag given wins over the recipe's default"
    scaled = build_schedule(model_args, stage_args, training_args)
    assert [stage.lrs for stage in scaled.stages] == [{"head": 4e-3}, recipes.every_group(4e-4)], "8 / the batch 4"
    assert not wants_pretrained_stem(True, two_stage, None)
    # given on random weights (the tiny runs'), a recipe that starts with frozen groups is warned about
    assert "--recipe two-stage on random weights: its first stage keeps stem, layer1, layer2, layer3, layer4, cbam " \
           "frozen at their random values for 1 epoch while" in caplog.text


def test_the_registry_refuses_a_second_recipe_of_a_name_and_names_the_recipes_for_an_unknown_one(two_stage):
    with pytest.raises(ValueError, match="a recipe named 'two-stage' is registered already"):
        recipes.register(TWO_STAGE)
    with pytest.raises(ScheduleError, match="unknown recipe 'gradual'; the recipes are staged, seed-exact, full, "
                                            "full-cosine, fast, two-stage"):
        recipes.get("gradual")


def test_help_says_every_recipe_from_the_registry():
    help_text = "".join(build_parser((), "").format_help().split())  # argparse wraps at spaces and hyphens
    for name in recipes.names():
        said = f"{name}{recipes.DEFAULT_FOR.get(name, '')}: {recipes.get(name).summary}"
        assert "".join(said.split()) in help_text


def test_only_one_stage_recipes_take_a_length_and_a_learning_rate(tmp_path):
    full = recipes.get("full").schedule(epochs=3, lr=5e-4)
    assert full.stages[0].epochs == 3 and set(full.stages[0].lrs.values()) == {5e-4}
    assert recipes.get("full").schedule() == Schedule(recipes.get("full").stages)
    model_args, _, stage_args, training_args = parse_arguments(["--recipe", "seed-exact", "--learning_rate", "1e-4",
                                                       "--output_dir", str(tmp_path)])
    with pytest.raises(ScheduleError,
                       match="--learning_rate sets the lr of --recipe full, full-cosine or fast; the stages"):
        build_schedule(model_args, stage_args, training_args)


def chosen(tmp_path, *flags: str):
    model_args, _, stage_args, training_args = parse_arguments([*flags, "--output_dir", str(tmp_path / "out")])
    return (*chosen_recipe(model_args, stage_args), training_args)


def test_the_recipe_follows_the_weights_and_every_given_flag_wins(tmp_path):
    recipe, why, args = chosen(tmp_path)  # torchvision's weights, the default
    assert recipe.name == "full-cosine" and why.startswith("recipe full-cosine (trained weights: the transfer study's")
    assert args.optim.startswith("adamw") and set(recipe.stages[0].lrs.values()) == {1e-4}
    recipe, why, args = chosen(tmp_path, "--model_name_or_path", "runs/earlier")  # a saved model: trained too
    assert recipe.name == "full-cosine" and why.startswith("recipe full-cosine (trained weights")
    recipe, why, args = chosen(tmp_path, "--recipe", "staged")  # the tutorial's stages: one flag away
    assert recipe.name == "staged" and why is None and len(recipe.stages) == 3
    recipe, why, args = chosen(tmp_path, "--backbone_weights", "none")
    assert recipe.name == "fast" and why.startswith("recipe fast (random weights: the from-scratch recipe")
    assert (args.optim, args.tta, args.label_smoothing_factor) == ("sgd", "flip", 0.2), "fast's flag defaults"
    recipe, why, args = chosen(tmp_path, "--backbone_weights", "none", "--recipe", "staged")
    assert recipe.name == "staged" and why is None and args.optim.startswith("adamw")
    recipe, why, args = chosen(tmp_path, "--backbone_weights", "none", "--tta", "none")
    assert recipe.name == "fast" and args.tta == "none", "a flag given wins over the chosen recipe's default"
    run_file = tmp_path / "run.yaml"
    run_file.write_text(f"backbone_weights: none\noutput_dir: {tmp_path / 'out'}\n")
    model_args, _, stage_args, training_args = parse_arguments([str(run_file)])
    assert chosen_recipe(model_args, stage_args)[0].name == "fast" and training_args.optim == "sgd"


def test_a_stages_file_takes_no_recipe_defaults(tmp_path):
    stages_file = tmp_path / "stages.json"
    stages_file.write_text('[{"epochs": 2, "lr": 1e-3}]')
    recipe, why, args = chosen(tmp_path, "--backbone_weights", "none", "--stages_file", str(stages_file))
    assert recipe.name == recipes.DEFAULT and why is None and args.optim.startswith("adamw") and args.tta == "none"


def test_the_random_start_warning_names_what_stays_frozen():
    assert recipes.random_start_warning("full", recipes.get("full").stages[0]) is None
    warning = recipes.random_start_warning("staged", recipes.get("staged").stages[0])
    assert "--recipe staged on random weights: its first stage keeps layer1, layer2, layer3, layer4 frozen at " \
           "their random values for 5 epochs" in warning
    assert "55.56%" in warning and "--recipe fast" in warning
