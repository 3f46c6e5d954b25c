"""A run is decided once: a frozen configuration that the Trainer, the log, the saved model, run_facts.json and the
card all follow, while the parsed arguments stay as the user gave them."""

import dataclasses
import json
import logging

import pytest
from helpers import flags
from tiny_run import TINY

from training.arguments import parse_arguments
from training.checkpoints import RUN_FACTS
from training.outputs import write_run_outputs
from training.run import prepare_run, train_and_evaluate


def test_the_run_configuration_is_frozen_and_everything_follows_it(dataset, tmp_path, caplog):
    out = tmp_path / "out"
    arguments = parse_arguments([*TINY, *flags(dataset, out)])
    training_args = arguments[3]
    with caplog.at_level(logging.INFO, logger="training.run"):
        run, _ = prepare_run(*arguments)
    config = run.config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.schedule = None
    with pytest.raises(TypeError):  # the architecture is read-only too
        config.architecture["stem"] = "cifar"

    # the parsed arguments stay as given; the Trainer's are derived from the configuration
    assert training_args.num_train_epochs is None and training_args.data_on_device is None
    trainer_args = run.trainer.args
    assert trainer_args is not training_args
    assert trainer_args.num_train_epochs == config.schedule.total_epochs == 3
    assert trainer_args.data_on_device is config.data_on_device is True  # 16 px images: decoded once
    assert run.trainer.device_data is not None and run.trainer.schedule == config.schedule
    assert not trainer_args.push_to_hub
    logged = [r.getMessage().removeprefix("default: ") for r in caplog.records if r.getMessage().startswith("default:")]
    assert logged == list(config.defaults[1:]) and not any(line.startswith("recipe ") for line in logged)  # given

    record = train_and_evaluate(run)
    write_run_outputs(record, run.trainer.model, run.data)
    facts = json.loads((out / "checkpoint-12" / RUN_FACTS).read_text())
    assert facts["schedule"] == [dataclasses.asdict(stage) for stage in config.schedule.stages]
    assert facts["model"] == dict(config.architecture) and facts["recipe"] == config.recipe.name
    saved = json.loads((out / "config.json").read_text())
    assert {name: saved[name] for name in ("stem", "cbam_init", "image_size")} == \
        {name: config.architecture[name] for name in ("stem", "cbam_init", "image_size")}
    card = (out / "README.md").read_text()
    assert all(choice in card for choice in config.defaults)
    assert config.precision in card and len(run.trainer.state.log_history) > 0
