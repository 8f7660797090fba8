"""`finetune`: train AlexNet's layers on a folder of class folders."""
import signal
import sys
from pathlib import Path

import click

from alexft import interrupts
from alexft.atomic import json_text
from alexft.errors import TrainingInterrupted
from alexft.train_options import MAX_SEED

from . import examples
from .common import (PathParam, fail_cleanly, progress_option, read_weights, start_tensorflow, terminating_cleanly,
                     weights_option)


def _layer_list(ctx, param, value):
    from alexft.train_options import OptionsError, layer_list

    try:
        return None if value is None else layer_list(value)
    except OptionsError as error:
        raise click.BadParameter(str(error), ctx, param) from None


class _OptionValue(click.ParamType):
    """A value TrainOptions parses (a number or "auto"); its OptionsError becomes click's usage error."""

    def __init__(self, name, parser_name):
        self.name, self.parser_name = name, parser_name

    def convert(self, value, param, ctx):
        from alexft import train_options

        try:
            return getattr(train_options, self.parser_name)(value)
        except train_options.OptionsError as error:
            self.fail(str(error), param, ctx)


@click.command(short_help="Fine-tune AlexNet on a folder with one sub-folder per class.",
               epilog=examples.epilog("finetune"))
@click.argument("data_dir", required=False, type=PathParam(exists=True, file_okay=False))
@weights_option
@click.option("--skip", default="fc8", show_default=True, callback=_layer_list,
              help="Layers not loaded from the weights (fresh init), of conv1-conv5 and fc6-fc8: names (fc7,fc8), "
                   "a range (conv5-fc8) or all.")
@click.option("--train", "train_layers", default=None, callback=_layer_list,
              help="Layers that learn, of conv1-conv5 and fc6-fc8: names (fc7,fc8), a range (conv5-fc8) or all. "
                   "Default: the skipped ones.")
@click.option("--epochs", default="auto", show_default=True, type=_OptionValue("N|auto", "parse_epochs"), metavar="N|auto",
              help="Passes over the training images, or 'auto': 10 on images; on the feature cache, enough for "
                   "1000 steps (10-200 epochs). With --resume: may change, but not below the epochs done (equal: the run "
                   "ends now); auto keeps the run's.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images per training step.")
@click.option("--lr", default="auto", show_default=True, type=_OptionValue("RATE|auto", "parse_rate"), metavar="RATE|auto",
              help="Base learning rate, or 'auto': measured by a range test on the training data before the first "
                   "epoch (lr_find.png). Fresh layers learn 10x faster and biases 2x; the rate drops to a tenth for "
                   "the last third of the epochs. With --resume: a new rate from now on.")
@click.option("--val-dir", type=PathParam(exists=True, file_okay=False), help="Validation class folders (default: DATA_DIR/val if present).")
@click.option("--val-split", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Fraction held out per class when there is no validation folder.")
@click.option("--ten-crop", is_flag=True, help="Validate on the average of Caffe's ten crops (default: centre crop).")
@click.option("-o", "--output", type=PathParam(), help="Run folder. Default: runs/<timestamp>.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED), help="Seeds the split, the data order, the crops and dropout.")
@click.option("--device", default="auto", show_default=True, type=_OptionValue("auto|cpu|gpu|gpu:N", "parse_device"),
              help="auto, cpu, gpu or gpu:N.")
@click.option("--strategy", default="auto", show_default=True, type=click.Choice(["auto", "one", "mirrored", "multiworker"]), help="multiworker: across machines, configured by TF_CONFIG (docs/cluster.md).")
@click.option("--heartbeat-timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help="multiworker: silence after which a worker counts as lost; the same on every worker. "
                   "Default: $ALEXFT_HEARTBEAT_TIMEOUT, else 120.")
@click.option("--mixed-precision/--no-mixed-precision", default=None, help="16-bit compute: float16 on GPUs, bfloat16 on CPUs that have it (avx512_bf16, amx_bf16). Default: on for GPUs, off for CPUs.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Train the top layers on cached features of the frozen part, kept for the next run on the same "
                   "images: $ALEXFT_FEATURE_STORE (default: the cache's features/; 'off': not kept), "
                   "at most $ALEXFT_FEATURE_STORE_GB (10).")
@click.option("--dropout", default=0.5, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Dropout rate of fc6 and fc7 while training.")
@click.option("--max-broken", default=0.1, show_default=True, type=click.FloatRange(0, 1), help="Stop when more than this fraction of images is broken.")
@click.option("--max-recoveries", default=3, show_default=True, type=click.IntRange(min=0),
              help="Times a diverging epoch is restarted from the last good state at a tenth of the rate before the run stops.")
@click.option("--keep-last/--no-keep-last", default=False, help="Also keep the last epoch's trained layers (last_layers.npz).")
@click.option("--keep-checkpoint/--no-keep-checkpoint", default=False,
              help="Keep checkpoint.npz after the run finishes (to --resume with more --epochs).")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON object.")
@progress_option
@fail_cleanly
@terminating_cleanly()  # before the epochs SIGTERM stops as Ctrl-C does; the epochs take both signals themselves
def finetune(output, resume, as_json, progress, **values):
    """Fine-tune AlexNet on DATA_DIR/<class>/<images> (or DATA_DIR/train + DATA_DIR/val).

    Writes model.npz (the best epoch, from epoch 1 on), history.csv, curves.png, lr_find.png,
    config.json, classes.json and TensorBoard logs into the run folder; checkpoint.npz while
    it runs. Exit status 130/143 when stopped by Ctrl-C/SIGTERM (the checkpoint stays, and
    model.npz once an epoch has ended; with --json, a JSON object says what was kept). With
    --resume, DATA_DIR and the options not given
    are the run's own (its config.json), except the rate, device, strategy and precision.
    """
    # A stop from the command's first line on is said as one from the epochs is: with --json, a
    # script reading stdout had found nothing when it came in the listing or TensorFlow's import.
    try:
        _finetune(output, resume, as_json, progress, values)
    except TrainingInterrupted as interrupted:  # also before the epochs (caching, range test): it says what was kept
        _say_stopped(interrupted, as_json)
    except KeyboardInterrupt as stop:  # before training was entered (the listing, the weights, TensorFlow's import)
        _say_stopped(_before_training(getattr(stop, "signal_number", signal.SIGINT), resume, output), as_json)
    except Exception:
        if not interrupts.pending():
            raise
        # A stop inside TensorFlow's import can surface as another error (see fail_cleanly).
        _say_stopped(_before_training(interrupts.stop_signal(), resume, output), as_json)


def _finetune(output, resume, as_json, progress, values):
    """finetune's work; `values`: its other parameters, by name."""
    from alexft.train_options import TrainOptions
    from alexft.train_setup import RunAlreadyFinished

    saved = None
    if resume:
        try:
            saved = _take_the_runs_settings(click.get_current_context(), output, values)
        except RunAlreadyFinished as done:  # its data folder or weights gone, which it no longer needs
            click.echo(json_text(done.summary) if as_json else _describe_summary(done.summary))
            return
    elif values["data_dir"] is None:
        raise click.UsageError("Missing argument 'DATA_DIR'.")
    data_dir, weights, train_layers = values.pop("data_dir"), values.pop("weights"), values.pop("train_layers")
    values["ten_crop_val"] = values.pop("ten_crop")
    values["val_dir"] = values["val_dir"] and str(values["val_dir"])
    options = TrainOptions(train=train_layers, **values)
    _check_layers(click.get_current_context(), options)
    _check_multiworker(options, output)
    if saved is not None and not _layers_given(click.get_current_context()):
        # An option given again with another value: said now, before the listing. Layers given
        # are checked with the rest once the run has chosen them (a class count may add fc8 to
        # --skip), so that one refusal names every change.
        from alexft.run_folder import refuse_changes
        from alexft.train_options import cache_matters, option_change

        ignored = ("skip", "train") + (() if cache_matters(saved, options.as_dict()) else ("cache",))
        keys = [key for key in options.IDENTITY if key in saved and key not in ignored]
        refuse_changes(saved, options.as_dict(), output, keys, describe=option_change)
    dataset, weights, finished = _check_before_training(data_dir, options, weights, output, resume, progress)
    if finished:  # --resume of a run that has done all it was asked for: nothing to start TensorFlow for
        click.echo(json_text(finished) if as_json else _describe_summary(finished))
        return
    # Said before TensorFlow's seconds of start-up, so a log shows at once what the run found.
    click.echo(f"alexft: {data_dir}: {len(dataset.class_names):,} classes, {len(dataset.train):,} training and "
               f"{len(dataset.val):,} validation images; weights {weights.path}", err=True)
    start_tensorflow()
    from alexft.train import finetune_as_command, say

    summary = finetune_as_command(data_dir, options, weights=weights, output=output, resume=resume, progress=progress,
                                  dataset=dataset, log=say)
    if as_json:
        click.echo(json_text(summary))
    else:
        click.echo(_describe_summary(summary))


def _before_training(signal_number, resume, output):
    """A stop before the run folder was touched: a resumed one is kept as it was."""
    return interrupts.before_training(signal_number, resume, Path(output) if resume and output is not None else None)


def _say_stopped(interrupted, as_json):
    """What was kept, on stderr; with --json also on stdout (a script reading it learns what is on
    disk, not only the exit status); exit 130/143."""
    click.echo(f"alexft: {interrupted}", err=True)
    if as_json:
        click.echo(json_text(_interruption_record(interrupted)))
    sys.exit(128 + interrupted.signal_number)


def _interruption_record(interrupted):
    def path(value):
        return None if value is None else str(value)

    finished = interrupted.summary or {}  # a run completed before the stop: its figures, as a finished one prints them
    return {**finished, "stopped_by": signal.Signals(interrupted.signal_number).name, "run": path(interrupted.run),
            "model": path(interrupted.model), "message": str(interrupted), "finished": interrupted.summary is not None}


def _check_layers(ctx, options):
    """A layer choice that cannot work is a usage mistake, said at once (exit 2). Left to the
    run: no layer given at all, as fc8 then starts fresh if the classes differ from the weights'."""
    from click.core import ParameterSource

    from alexft.train_options import OptionsError, check_layers

    if options.train is None and not options.skip:
        if ctx.get_parameter_source("skip") is ParameterSource.COMMANDLINE:  # `--skip ''`: not the default fc8
            raise click.UsageError("--skip names no layer, and --train is not given: give the layers that start "
                                   "afresh (such as fc8), or --train the layers that learn")
        return
    try:
        check_layers(options.skip, options.train, default_skip=ctx.get_parameter_source("skip") is ParameterSource.DEFAULT)
    except OptionsError as mistake:
        raise click.UsageError(str(mistake)) from None


def _check_multiworker(options, output):
    """The options, then TF_CONFIG: mistakes of the invocation, said before the data is listed (exit 2)."""
    from alexft.cluster_config import cluster_role
    from alexft.errors import DeviceError
    from alexft.train_options import OptionsError
    from alexft.train_setup import check_multiworker_options

    try:
        check_multiworker_options(options, output)
        if options.strategy == "multiworker":
            cluster_role()
    except (OptionsError, DeviceError) as mistake:
        raise click.UsageError(str(mistake)) from None


# Where a parameter's value is kept in config.json, when the name differs.
_CONFIG_KEYS = {"train_layers": "train", "ten_crop": "ten_crop_val"}


def _layers_given(ctx):
    from click.core import ParameterSource

    return any(ctx.get_parameter_source(name) is not ParameterSource.DEFAULT for name in ("skip", "train_layers"))


def _take_the_runs_settings(ctx, output, values):
    """--resume: what the command line leaves at its default is the resumed run's setting, so
    `finetune --resume --output RUN` (as a stopped run says) continues it as it was begun.
    What is given stays given: a changed --lr or --epochs is taken, any other change refused.
    Returns the run's config.json."""
    from click.core import ParameterSource

    from alexft.train_setup import resumed_settings

    if output is None:
        raise click.UsageError("--resume needs --output, the run folder to continue.")
    given = {name for name in values if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    epochs_auto = "epochs" in given and values["epochs"] == "auto"
    options = {_CONFIG_KEYS.get(name, name): values[name] for name in given - {"data_dir", "weights"}}
    data_dir, weights, fields, saved = resumed_settings(output, values["data_dir"] if "data_dir" in given else None,
                                                        values["weights"] if "weights" in given else None, options,
                                                        log=lambda message: click.echo(f"alexft: {message}", err=True))
    option_names = {key: name for name, key in _CONFIG_KEYS.items()}
    values.update({option_names.get(key, key): value for key, value in fields.items()})
    values.update(data_dir=data_dir, weights=weights and Path(weights))
    if epochs_auto and saved.get("epochs") is not None:
        click.echo(f"alexft: note: --epochs auto keeps a resumed run's {saved['epochs']} epochs: give a number to "
                   "change them", err=True)
    if "lr" in given and values["lr"] == "auto":
        kept = saved.get("lr_found") if saved.get("lr") == "auto" else saved.get("lr")
        click.echo(f"alexft: note: --lr auto keeps a resumed run's rate{f' ({kept:.3g})' if kept else ''}: the range "
                   "test runs once, before a run's first epoch; give a number for a new rate", err=True)
    return saved


def _check_before_training(data_dir, options, weights, output, resume, progress):
    """What can be refused without TensorFlow is refused before its seconds of start-up: the
    data's layout, a run folder already in use, missing weights, the feature store's limit,
    and a resume with other layers, images, classes or base weights than the run's.
    Returns (dataset, the weights read (a WeightSet), the summary of a resumed run that has
    already finished or None)."""
    from alexft.data import load_dataset
    from alexft.feature_store import limit_bytes
    from alexft.run_folder import RunFolder
    from alexft.train_setup import planned_run, resume_point

    limit_bytes()  # a mistyped $ALEXFT_FEATURE_STORE_GB
    dataset = load_dataset(data_dir, val_dir=options.val_dir, val_split=options.val_split, seed=options.seed)
    if not resume and options.strategy != "multiworker":  # the default, runs/<timestamp>, is checked for writing
        run = RunFolder(output if output is not None else RunFolder.default_path())
        run.refuse_inside(data_dir, options.val_dir)
        run.refuse_existing()
    weight_set = read_weights(weights, progress=progress, skip=options.skip)
    if not resume:
        return dataset, weight_set, None
    # The run decides again after TensorFlow's start-up, saying what it decides (hence no log here).
    planned, _, config = planned_run(data_dir, options, dataset, weight_set, log=lambda message: None)
    _, finished = resume_point(RunFolder(output), config, planned, log=lambda message: click.echo(f"alexft: {message}", err=True))
    return dataset, weight_set, finished


def _rate_origin(summary):
    if summary["lr"] != "auto":
        return ""
    if summary.get("lr_measured") is not False:
        return " (chosen by the range test)"
    from alexft.train_options import CAFFE_BASE_LR

    found = summary.get("lr_found")
    start = (f"Caffe's {CAFFE_BASE_LR:g}" if found in (None, CAFFE_BASE_LR)
             else f"{found:.3g}, a tenth of where its loss exploded")
    return f" (the range test measured no rate; the run started at {start})"


def _describe_summary(summary):
    best = summary["best"]
    lines = [f"run folder: {summary['run']}",
             f"epochs: {summary['epochs']} (model.npz holds epoch {summary['best_epoch']})",
             f"base learning rate: {summary['base_lr']:.3g}" + _rate_origin(summary)
             + (f", after {summary['recoveries']} recover{'y' if summary['recoveries'] == 1 else 'ies'} from divergence"
                if summary["recoveries"] else "")]
    for name, metrics in (("best", best), ("last", summary)):
        line = f"{name}: train loss {metrics['train_loss']:.4f}, accuracy {metrics['train_accuracy']:.3f}"
        if metrics["val_accuracy"] is not None:
            line += f"; val loss {metrics['val_loss']:.4f}, accuracy {metrics['val_accuracy']:.3f}"
        lines.append(line)
    lines.append(f"images: {summary['train_images']:,} training, {summary['val_images']:,} validation")
    if summary["broken_files"]:
        lines.append(f"broken files skipped: {summary['broken_files']} (listed in broken_files.json)")
    return "\n".join(lines)
