"""Learning fast from scratch: the fast recipe's optimizer, lr shape and defaults; the EMA of the weights; flip TTA;
the crop-flip augmentation on both data paths."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import flags, run_script
from PIL import Image
from safetensors.torch import load_file
from tiny_run import TINY
from torch.nn import functional as F

from modeling_resnet_cbam import ResNetCBAMConfig, ResNetCBAMForImageClassification
from training.arguments import parse_arguments
from training.cli import finetune_main
from training.device_data import device_augmentation
from training.ema import EMA_FILE, WeightEMA
from training.inference import class_probabilities
from training.outputs import write_model_card
from training.recipes import FAST_BATCH, FAST_LR
from training.stages import Stage
from training.transforms import build_transforms, crop_padding

FAST_TINY = ["--recipe", "fast", "--per_device_train_batch_size", "8", "--num_train_epochs", "2"]


def test_fast_sets_its_optimizer_shape_and_defaults_and_every_flag_still_wins():
    model_args, data_args, stage_args, training_args = parse_arguments(["--recipe", "fast"])
    spec = training_args.optimizer
    assert (spec.name, spec.hyperparameters, spec.weight_decay) == \
        ("sgd", {"momentum": 0.9, "nesterov": True}, 5e-4)
    assert training_args.label_smoothing_factor == 0.2 and training_args.per_device_train_batch_size == FAST_BATCH
    assert (training_args.ema_decay, training_args.tta, data_args.augment) == (0.0, "flip", "none")
    assert model_args.backbone_weights == "none"
    from training.arguments import build_schedule

    (stage,) = build_schedule(model_args, stage_args, training_args).stages
    assert stage == Stage(2, dict.fromkeys(stage.lrs, FAST_LR), "everything", shape="linear", warmup=0.2, start=0.2)
    assert len(stage.lrs) == 7
    # the triangle: from 0.2x the peak, the peak at 20% of the steps, then linear towards 0
    factors = [stage.factor(step, 100) for step in range(100)]
    assert factors[0] == pytest.approx(0.2 + 0.8 / 20) and factors[19] == 1.0 and factors[99] == pytest.approx(1 / 80)
    assert all(a < b for a, b in zip(factors[:19], factors[1:20], strict=True))  # rising to the peak
    assert factors[20] == 1.0 and all(a > b for a, b in zip(factors[20:], factors[21:], strict=False))  # then falling

    model_args, data_args, stage_args, training_args = parse_arguments(
        ["--recipe", "fast", "--optim", "adamw_torch", "--ema_decay", "0.9", "--tta", "none", "--augment",
         "crop-flip", "--learning_rate", "0.05", "--num_train_epochs", "3"])
    assert training_args.optimizer.name == "adamw_torch" and training_args.ema_decay == 0.9
    assert (training_args.tta, data_args.augment) == ("none", "crop-flip")
    (stage,) = build_schedule(model_args, stage_args, training_args).stages
    assert stage.epochs == 3 and set(stage.lrs.values()) == {0.05}
    # the other recipes keep the tutorial's defaults (the augmentation is chosen from the images: tutorial for CIFAR)
    _, data_args, _, training_args = parse_arguments([])
    assert (training_args.optimizer.name, training_args.ema_decay, training_args.tta, data_args.augment) == \
        ("adamw_torch_fused", 0.0, "none", None)


def test_fast_scales_from_its_own_batch_and_any_recipe_takes_the_triangle_from_flags():
    from training.arguments import build_schedule

    model_args, _, stage_args, training_args = parse_arguments(
        ["--recipe", "fast", "--per_device_train_batch_size", "512", "--scale_lr_with_batch", "true"])
    (stage,) = build_schedule(model_args, stage_args, training_args).stages
    assert set(stage.lrs.values()) == {FAST_LR * 512 / FAST_BATCH}
    model_args, _, stage_args, training_args = parse_arguments(
        ["--recipe", "staged", "--lr_scheduler_type", "linear", "--warmup_steps", "0.25", "--lr_scheduler_kwargs",
         '{"start_factor": 0.2}'])
    stages = build_schedule(model_args, stage_args, training_args).stages
    assert len(stages) == 3 and all((s.shape, s.warmup, s.start) == ("linear", 0.25, 0.2) for s in stages)
    assert stages[0].factor(0, 8) == pytest.approx(0.2 + 0.8 / 2)
    with pytest.raises(ValueError, match="start_factor"):
        parse_arguments(["--lr_scheduler_kwargs", '{"start_factor": 0.2}'])  # no warmup to start


def test_a_given_lr_shape_replaces_the_recipes_even_constant():
    from training.arguments import build_schedule

    model_args, _, stage_args, training_args = parse_arguments(["--recipe", "fast", "--lr_scheduler_type", "constant"])
    (stage,) = build_schedule(model_args, stage_args, training_args).stages
    assert (stage.shape, stage.warmup, stage.start) == ("constant", 0.0, 0.0)
    model_args, _, stage_args, training_args = parse_arguments(["--recipe", "fast"])
    assert build_schedule(model_args, stage_args, training_args).stages[0].shape == "linear"


def test_fast_from_a_json_file_takes_the_same_defaults(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"recipe": "fast", "label_smoothing_factor": 0.1}))
    _, data_args, _, training_args = parse_arguments([str(tmp_path / "run.json")])
    assert training_args.optimizer.name == "sgd" and data_args.augment == "none"
    assert training_args.label_smoothing_factor == 0.1


@pytest.mark.parametrize("bad, words", [(["--ema_decay", "1"], "--ema_decay must be in [0, 1)"),
                                         (["--tta", "five-crop"], "--tta must be one of none, flip"),
                                         (["--augment", "flip"],
                                          "--augment must be one of tutorial, crop-flip, resized-crop-flip, "
                                          "randaugment, trivialaugment, autoaugment, none")])
def test_bad_fast_flags_are_refused(bad, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_arguments(["--recipe", "fast", *bad])


class WeightsRecorder:
    """The model's floating state at the start and after every optimizer step."""

    def __init__(self):
        from transformers import TrainerCallback

        recorder = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                recorder.states = [_state(model)]

            def on_step_end(self, args, state, control, model=None, **kwargs):
                recorder.states.append(_state(model))

        self.callback = Callback()


def _state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_fast_run_builds_nesterov_sgd_without_decay_on_1d_and_its_ema_is_the_direct_average(dataset, tmp_path):
    from training.run import prepare_run, train_and_evaluate

    weights = WeightsRecorder()
    args = parse_arguments(TINY + flags(dataset, tmp_path / "out", *FAST_TINY, "--ema_decay", "0.8",
                                        "--save_strategy", "no", "--stage_epochs", "2"))
    finished, _ = prepare_run(*args, extra_callbacks=[weights.callback])
    optimizer = finished.trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.SGD)
    for group in optimizer.param_groups:
        assert group["nesterov"] and group["momentum"] == 0.9
        assert group["weight_decay"] == (5e-4 if all(p.ndim > 1 for p in group["params"]) else 0.0)
        assert all(p.ndim > 1 for p in group["params"]) or all(p.ndim == 1 for p in group["params"])
    record = train_and_evaluate(finished)

    states = weights.states
    assert len(states) == 8 + 1  # 32 images, batch 8, 2 epochs
    expected = {name: tensor.double() for name, tensor in states[0].items() if tensor.is_floating_point()}
    for step, state in enumerate(states[1:], start=1):
        decay = min(0.8, (1 + step) / (10 + step))
        expected = {name: decay * value + (1 - decay) * state[name].double() for name, value in expected.items()}
    saved = load_file(tmp_path / "out" / "model.safetensors")
    model = ResNetCBAMForImageClassification.from_pretrained(tmp_path / "out")
    for name, value in expected.items():
        assert torch.allclose(model.state_dict()[name].double(), value, rtol=1e-5, atol=1e-6), name
    assert any(not torch.equal(states[-1][name], model.state_dict()[name]) for name in expected), "EMA == live?"
    running = [name for name in expected if name.endswith("running_var")]
    assert running and all(torch.allclose(model.state_dict()[n].double(), expected[n], rtol=1e-5) for n in running)
    counters = [name for name in states[-1] if name.endswith("num_batches_tracked")]
    assert all(model.state_dict()[n] == states[-1][n] == 8 for n in counters), "counters copied, not averaged"
    assert all(torch.equal(saved[name], model.state_dict()[name]) for name in saved)
    card = write_model_card(record, model).read_text()
    assert "exponential moving average of the weights (decay 0.8)" in card and "flip TTA" in card
    assert record.ema_decay == 0.8 and record.tta == "flip"


def test_weight_ema_round_trips_through_its_file(tmp_path):
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], num_labels=3))
    ema = WeightEMA(model, 0.9)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    ema.update(model, step=50)
    ema.save(tmp_path)
    other = WeightEMA(model, 0.9)
    other.load(tmp_path)
    assert all(torch.equal(ema.state[name], other.state[name]) for name in ema.state)
    live = _state(model)
    with ema.swapped_into(model):
        assert torch.equal(model.classifier.weight, ema.state["classifier.weight"])
    assert all(torch.equal(live[name], tensor) for name, tensor in model.state_dict().items())
    (tmp_path / EMA_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="ema.safetensors missing"):
        other.load(tmp_path)


def test_flip_tta_is_the_mean_of_the_two_softmaxes():
    torch.manual_seed(1)
    model = ResNetCBAMForImageClassification(ResNetCBAMConfig(depths=[1, 1, 1, 1], num_labels=5, image_size=16)).eval()
    with torch.no_grad():  # weights that tell images apart (a new model's are close to constant on noise)
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    pixels = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = (F.softmax(model(pixels).logits, -1) + F.softmax(model(pixels.flip(-1)).logits, -1)) / 2
        probabilities = class_probabilities(model, pixels, "flip")
        plain = class_probabilities(model, pixels, "none")
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert torch.allclose(plain, F.softmax(model(pixels).logits, -1), atol=1e-6)
    assert not torch.allclose(probabilities, plain, atol=1e-4), "the mirror changes the prediction of noise"


@pytest.fixture(scope="module")
def tta_run(dataset, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("tta") / "out"
    assert finetune_main(TINY + flags(dataset, output_dir, "--save_strategy", "no", "--tta", "flip")) == 0
    return output_dir


def test_compare_runs_tables_and_plots_accuracy_against_time(tta_run, tmp_path):
    done = run_script("compare_runs.py", f"{tta_run}=tiny", str(tta_run), "--plot", str(tmp_path / "time.png"))
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((tta_run / "trainer_state.json").read_text())["log_history"]
    epochs = [entry for entry in history if "stage" in entry]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == len(epochs) == 3
    assert rows[-1] == (f"| tiny | 3 | {sum(e['epoch_time'] for e in epochs) / 60:.1f} | "
                        f"{100 * epochs[-1]['eval_accuracy']:.2f}% |")
    assert (tmp_path / "time.png").stat().st_size > 10_000
    done = run_script("compare_runs.py", str(tmp_path / "absent"))
    assert done.returncode == 2 and "absent: no trainer_state.json" in done.stderr


def test_tta_in_the_scripts_changes_what_they_report(tta_run, dataset, tmp_path):
    card = (tta_run / "README.md").read_text()
    assert "flip TTA" in card
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(image)
    scores = {}
    for tta in ("none", "flip"):
        done = run_script("predict.py", "--model", str(tta_run), str(image), "--tta", tta, "--top_k", "4",
                          "--json", str(tmp_path / f"{tta}.json"), "--num_workers", "0")
        assert done.returncode == 0, done.stderr[-2000:]
        (predicted,) = json.loads((tmp_path / f"{tta}.json").read_text())
        scores[tta] = {p["label"]: p["score"] for p in predicted["predictions"]}
        done = run_script("evaluate_model.py", "--model", str(tta_run), "--dataset_name", str(dataset),
                          "--split", "validation", "--validation_split", "8", "--tta", tta)
        assert done.returncode == 0, done.stderr[-2000:]
        assert ("accuracy with flip TTA" in done.stdout) == (tta == "flip")
    assert scores["none"] != scores["flip"]
    model = ResNetCBAMForImageClassification.from_pretrained(tta_run).eval()
    from training.inference import load_model, preprocess_image

    _, processor = load_model(str(tta_run))
    pixels = preprocess_image(processor, image)[None]
    with torch.no_grad():
        expected = class_probabilities(model, pixels, "flip")[0]
    for index, label in model.config.id2label.items():
        assert scores["flip"][label] == pytest.approx(float(expected[index]), abs=1e-5)


def _positions_image(size: int) -> np.ndarray:
    """An RGB image whose pixels say where they are: R = row, G = column, B = 7."""
    rows, columns = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([rows * 4, columns * 4, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def _where_from(out: np.ndarray, size: int, pad: int) -> tuple[int, int, bool]:
    """The crop offset (in the padded image) and mirroring of an augmented positions image; asserts that it is a
    crop of the reflect-padded image, mirrored or not."""
    source = _positions_image(size)
    padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    for flipped in (False, True):
        candidate = out[:, ::-1] if flipped else out
        for top in range(2 * pad + 1):
            for left in range(2 * pad + 1):
                if np.array_equal(padded[top:top + size, left:left + size], candidate):
                    return top, left, flipped
    raise AssertionError("not a crop of the reflect-padded image, mirrored or not")


def test_crop_flip_translates_within_the_padding_and_mirrors_exactly_on_both_paths():
    size = 16
    pad = crop_padding(size)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    data = SimpleNamespace(image_size=size, native_size=(size, size), image_mean=mean, image_std=std, crop_pct=1.0,
                           random_erasing=0.0)
    pil = build_transforms(data, train=True, augment="crop-flip")
    kornia = device_augmentation("crop-flip", size, mean, std)
    image = _positions_image(size)
    torch.manual_seed(0)
    seen = {}
    for path in ("pil", "kornia"):
        if path == "pil":
            outputs = [pil(Image.fromarray(image)) for _ in range(200)]
        else:
            batch = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).repeat(200, 1, 1, 1)
            outputs = list(kornia(batch))
        found = [_where_from((o.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), size, pad) for o in outputs]
        seen[path] = found
        tops, lefts, flips = zip(*found, strict=True)
        assert set(tops) == set(lefts) == set(range(2 * pad + 1)), f"{path}: offsets {sorted(set(tops))}"
        assert 60 < sum(flips) < 140, f"{path}: {sum(flips)} of 200 mirrored"
