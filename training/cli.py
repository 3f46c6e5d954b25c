"""The fine-tuning command: parse arguments, refuse bad ones early, run, write the output folder, push."""

import logging
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import transformers

from training.arguments import FinetuneTrainingArguments, parse_arguments
from training.checkpoints import WriteError, last_complete_checkpoint, mark_complete, writing
from training.hardware import configure_threads
from training.hub import CheckpointPusher, HubError, check_push_access, push_folder
from training.images import DataError
from training.lock import run_lock
from training.onnx_export import ParityError, export_run
from training.outputs import write_run_data, write_run_outputs
from training.run import prepare_run, train_and_evaluate
from training.trainer import DivergenceError

logger = logging.getLogger("finetune")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def setup_logging(training_args: FinetuneTrainingArguments | None = None) -> None:
    """Log lines with the time on stdout: INFO on the process that logs (every process without training_args)."""
    level = logging.INFO if training_args is None or training_args.should_log else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level, stream=sys.stdout
    )
    transformers.utils.logging.set_verbosity(logging.WARNING)


class Stopped(BaseException):
    """SIGTERM or SIGINT: unwinds the run like Ctrl-C, so that the lock is released and what is saved is said."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals_raise():
    """SIGTERM and SIGINT raise Stopped in the main thread for the block (a scheduler's pre-emption, `timeout`).

    DataLoader workers inherit the handler when they are forked, and `accelerate launch` signals every process of
    the tree: a worker ignores the signal (raising there would print torch's worker traceback after the clean stop
    message), and the main process, unwinding, shuts its workers down."""
    main = os.getpid()

    def stop(signum, frame):
        if os.getpid() == main:
            raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def finetune_main(argv: list[str] | None = None, callbacks: tuple = ()) -> int:
    """scripts/finetune.py: 0, or 2 for bad flags, data or weights said before training, 1 for a run that failed
    after; `callbacks` join the Trainer's last (the hyperparameter search reports each epoch through one)."""
    try:
        model_args, data_args, stage_args, training_args = parse_arguments(argv)
    except ValueError as error:  # every argument dataclass checks itself (ScheduleError and DataError included)
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_logging(training_args)
    logger.info("%d CPU threads per process", configure_threads())
    try:
        with stop_signals_raise(), run_lock(training_args.output_dir, take=training_args.process_index == 0):
            return _finetune(model_args, data_args, stage_args, training_args, callbacks)
    except ValueError as error:  # the folder is in use or cannot be written
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Stopped as stop:
        print(f"error: stopped by {stop}; {saved_so_far(training_args.output_dir)}", file=sys.stderr)
        return 128 + stop.signum


def saved_so_far(output_dir: str) -> str:
    """What an interrupted run leaves to continue from, and how."""
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is None:
        return (f"no complete checkpoint was saved in {output_dir}: the run starts again from the beginning (the same "
                "command with --overwrite_output_dir)")
    return (f"the last complete checkpoint is {checkpoint}: continue with the same command and "
            "--resume_from_checkpoint last (after the end of training, that writes the missing final outputs)")


def _finetune(model_args, data_args, stage_args, training_args, callbacks=()) -> int:
    push = training_args.push_to_hub  # the Trainer itself never pushes (RunConfig.trainer_arguments): the finished
    pusher = None  # folder is pushed below, checkpoints by CheckpointPusher (--hub_strategy)
    try:
        if push and training_args.should_save:
            hub = (training_args.hub_model_id, training_args.hub_token, training_args.hub_private_repo)
            repo_id = check_push_access(*hub)
            logger.info("the Hub accepts pushes to %s", repo_id)
            if training_args.hub_strategy != "end":
                pusher = CheckpointPusher(repo_id, training_args.hub_strategy.value, training_args.hub_token,
                                          training_args.hub_always_push)
        run, checkpoint = prepare_run(model_args, data_args, stage_args, training_args)
        for callback in callbacks:
            run.trainer.add_callback(callback)
        if pusher:  # last, after RunFactsCallback has marked each checkpoint complete
            run.trainer.add_callback(pusher)
    except (ValueError, HubError, FileNotFoundError) as error:  # bad flags, data or weights: said before training
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        record = train_and_evaluate(run, checkpoint)
        if run.trainer.is_world_process_zero():
            with writing("the model card and plots", record.output_dir):
                write_run_outputs(record, run.trainer.model, run.data)
                write_run_data(record.output_dir, data_args, record.seed, record.eval_split)
                mark_complete(record.output_dir, {"eval_split": record.eval_split, "metrics": "all_results.json"})
    except (DivergenceError, WriteError) as error:  # a diverged run publishes nothing; a failed write says what is left
        print(f"error: {error}", file=sys.stderr)
        return 1
    except DataError as error:  # an image that cannot be decoded, met in training (from a worker: one line too)
        print(f"error: {error}; find every bad image before training with --verify_images (--skip_bad_images drops "
              f"them); {saved_so_far(training_args.output_dir)}", file=sys.stderr)
        return 1
    split = record.eval_split
    logger.info("final %s accuracy %.2f%% after %.0f s of training; model in %s", split,
                100 * record.metrics[f"{split}_accuracy"], record.metrics["train_wall_seconds"], record.output_dir)
    if not run.trainer.is_world_process_zero():
        return 0
    if training_args.export_onnx:
        try:
            logger.info("%s", export_run(record.output_dir))
        except (ValueError, ParityError, OSError) as error:  # the model is saved: only the export is missing
            print(f"error: the ONNX export failed: {error}; the model is saved in {record.output_dir}: export it "
                  f"with `python scripts/export_onnx.py --model {record.output_dir} --output "
                  f"{Path(record.output_dir) / 'model.onnx'}`" + (" and push the folder with scripts/push.py"
                                                                  if push else ""), file=sys.stderr)
            return 1
    if not push:
        return 0
    during = f"; {pusher.finish()}" if pusher else ""  # waits for a push still running
    try:
        url = push_folder(record.output_dir, training_args.hub_model_id, training_args.hub_token)
    except Exception as error:  # the folder is complete on disk: nothing is lost
        print(f"error: the push to {training_args.hub_model_id} failed ({error}); the model is saved in "
              f"{record.output_dir}: push it with `python scripts/push.py {record.output_dir} "
              f"--hub_model_id {training_args.hub_model_id}`", file=sys.stderr)
        return 1
    logger.info("pushed to %s%s", url, during)
    return 0
