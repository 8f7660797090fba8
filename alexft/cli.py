"""The `alexft` command: parse options, call one library function, print the result.

Results go to stdout (`--json` for machines); progress and messages go to stderr.
"""
import json
import logging
import sys
from pathlib import Path

import click

from alexft.quiet import import_tensorflow_quietly


# The exit-code contract of every command (docs/commands.md): 0 all good; 1 some input could
# not be used (named on stderr); 2 usage error (click's); 130/143 interrupted by Ctrl-C/SIGTERM.
EXIT_INPUT_FAILED = 1
EXIT_INTERRUPTED = 130


def _fail_cleanly(function):
    """Turn an AlexftError (a user's mistake or a bad file) into a one-line message, no
    traceback, exit 1; Ctrl-C into exit 130 (click would say "Aborted!" and exit 1). What was
    already printed stays printed."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from alexft.errors import AlexftError

        try:
            return function(*args, **kwargs)
        except AlexftError as error:
            raise click.ClickException(str(error)) from None
        except KeyboardInterrupt:
            sys.stdout.flush()
            click.echo("alexft: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


class _ImageInput(click.ParamType):
    """An image file or folder that exists, `-` (one image on standard input) or an http(s) URL."""

    name = "IMAGE"

    def convert(self, value, param, ctx):
        from alexft.image_sources import STDIN, image_source, is_url

        if not isinstance(value, str) or value == STDIN or is_url(value):
            return image_source(value) if isinstance(value, str) else value
        if not Path(value).exists():
            self.fail(f"{value}: no such file or folder", param, ctx)
        return Path(value)


def _expand_inputs(inputs):
    """Files, URLs and stdin as given; folders as their images, sorted. A folder without images
    is a warning; no image at all, or `-` twice, a usage error (exit 2). No TensorFlow yet."""
    from alexft.image_sources import StdinImage
    from alexft.preprocess import images_below

    found = []
    for item in inputs:
        if isinstance(item, Path) and item.is_dir():
            images = images_below(item)
            if not images:
                click.echo(f"alexft: warning: {item}: no images in this folder", err=True)
            found.extend(images)
        else:
            found.append(item)
    if sum(isinstance(item, StdinImage) for item in found) > 1:
        raise click.UsageError("'-' (standard input) can be given once")
    if not found:
        raise click.UsageError(f"no images found in {', '.join(map(str, inputs))}")
    return found


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alexft")
def main():
    """AlexNet with the original Caffe ImageNet weights: classify and fine-tune."""
    logging.basicConfig(format="alexft: %(message)s", stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("alexft").setLevel(logging.INFO)  # our own notes; libraries' INFO chatter stays out


weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Weights file (.npz, .npy or .caffemodel). Default: $ALEXFT_WEIGHTS, weights/bvlc_alexnet.npy, the cache, else download.",
)
precision_option = click.option(
    "--precision", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
    help="bfloat16: weights held and computed in bfloat16, for CPUs with AVX512_BF16 or AMX (and GPUs); faster there, "
         "its distance from float32 is measured in docs/benchmarks.md. float32 is Caffe's arithmetic.")
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr. Default: on a terminal."
)
def _preprocessing_options(command):
    """--mean and --resize: the choices Caffe's own tools differ on (preprocess.Preprocessing)."""
    command = click.option(
        "--resize", "resize", type=click.Choice(["uint8", "float"]), default="uint8", show_default=True,
        help="uint8: resize 8-bit pixels, as Caffe's convert_imageset built the databases the zoo's accuracy was "
             "measured on; float: resize in floating point, as Caffe's classify.py does (under a grey level apart).")(command)
    return click.option(
        "--mean", "mean_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
        help="Caffe's mean image (imagenet_mean.binaryproto) to subtract, cropped with each view, as Caffe's "
             "test protocol does. Default: its per-channel mean pixel.")(command)


def _preprocessing(mean_file, resize):
    """The Preprocessing asked for; the mean file is read (and refused) before TensorFlow starts."""
    from alexft.preprocess import Preprocessing

    mean = None
    if mean_file is not None:
        from alexft.weights.caffe import read_mean_image

        mean = read_mean_image(mean_file)
    return Preprocessing(mean=mean, float_resize=resize == "float")


def _shard(ctx, param, value):
    if value is None:
        return None
    index, slash, count = value.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise click.BadParameter(f"{value!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


shard_option = click.option(
    "--shard", callback=_shard, metavar="I/N",
    help="Only the I-th (0-based) of N contiguous, equal parts of the sorted inputs: N processes "
         "cover them exactly once, and their outputs concatenated for I = 0..N-1 equal one run's.")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=_ImageInput())
@weights_option
@click.option("--top-k", "top", default=5, show_default=True, type=click.IntRange(min=1), help="Classes shown per image.")
@click.option("--ten-crop", is_flag=True, help="Average Caffe's ten crops instead of the centre crop.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines on stdout, one object per image.")
@click.option(
    "--runtime", type=click.Choice(["auto", "tensorflow", "litert"]), default="auto", show_default=True,
    envvar="ALEXFT_RUNTIME", show_envvar=True,
    help="auto: up to 128 views (images, or ten each with --ten-crop) on LiteRT, which starts in a fraction of "
         "a second, from a copy of the weights built once in the cache; longer runs on TensorFlow.")
@shard_option
@_preprocessing_options
@precision_option
@progress_option
@click.pass_context
@_fail_cleanly
def classify(ctx, inputs, weights, top, ten_crop, batch_size, as_json, runtime, shard, mean_file, resize, precision,
             progress):
    """Print the top classes of images: files, folders (searched recursively), http(s) URLs,
    or - for one image on standard input.

    Exit status 1 if any input could not be used; all others are still classified.
    """
    from alexft import fast_start
    from alexft.pipeline import shard as shard_of
    from alexft.predict import classify as classify_images
    from alexft.weights.sources import resolve_weights

    if precision != "float32":
        if runtime == "litert":
            raise click.UsageError("--runtime litert computes in float32; --precision bfloat16 runs on TensorFlow")
        runtime = "tensorflow"
    paths = _expand_inputs(inputs)
    if shard:
        paths = shard_of(paths, *shard)
        if not paths:
            return  # more shards than images: this one has nothing to do
    weights = resolve_weights(weights, progress=progress)  # before TensorFlow: a missing file is said at once
    preprocessing = _preprocessing(mean_file, resize)
    on_litert = fast_start.suits(runtime, len(paths) * (10 if ten_crop else 1))
    predictor = on_litert and _litert_predictor(weights, preprocessing, runtime)
    if not predictor:
        predictor = _tensorflow_predictor(weights, progress, preprocessing, precision)
    failures = 0
    for result in classify_images(predictor, paths, top=top, ten_crop=ten_crop, batch_size=batch_size, progress=progress):
        failures += "error" in result
        _print_result(result, as_json)
    sys.stdout.flush()
    if failures:
        click.echo(f"alexft: {failures} of {len(paths)} inputs could not be classified", err=True)
    if on_litert and not isinstance(predictor, fast_start.LitePredictor):
        del predictor  # the build loads a second network
        _build_litert_copy(weights)
    if failures:
        ctx.exit(1)


def _litert_predictor(weights, preprocessing, runtime):
    """The LiteRT predictor, or None for TensorFlow. `auto` builds a missing copy after the
    results, so a first call answers as soon as before, and replaces a copy LiteRT refuses."""
    from alexft import fast_start

    try:
        return fast_start.load_litert_predictor(weights, preprocessing, build=runtime == "litert")
    except fast_start.FastStartError as error:
        if runtime == "litert":
            raise
        click.echo(f"alexft: warning: {error}; answering on TensorFlow, then building it again", err=True)
        return None


def _tensorflow_predictor(weights, progress, preprocessing, precision="float32"):
    import_tensorflow_quietly()
    from alexft.predict import load_predictor

    return load_predictor(weights, progress=progress, preprocessing=preprocessing, precision=precision)


def _build_litert_copy(weights):
    """The one-off build `--runtime auto` does after its results; a failure only costs the fast start."""
    from alexft import fast_start
    from alexft.errors import AlexftError

    try:
        fast_start.build_copy(weights)
    except AlexftError as error:
        click.echo(f"alexft: warning: no LiteRT copy was built, short calls stay on TensorFlow: {error}", err=True)


def _print_result(result, as_json):
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    elif "error" in result:
        click.echo(f"error: {result['error']}", err=True)
    else:
        click.echo(result["path"])
        for prediction in result["predictions"]:
            click.echo(f"  {prediction['probability']:7.2%}  {prediction['label']}")


@main.command()
@click.argument("data", required=False, type=click.Path(path_type=Path, exists=True, file_okay=False))
@weights_option
@click.option("--list", "list_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="Caffe list file: 'relative/path label_index' per line (ILSVRC val.txt).")
@click.option("--root", type=click.Path(path_type=Path, exists=True, file_okay=False), help="Folder the --list paths are relative to.")
@click.option("--ten-crop", is_flag=True, help="Also report Caffe's 10-crop protocol (the centre crop is one of the ten).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch.")
@click.option("--report", type=click.Path(path_type=Path, file_okay=False), help="Write metrics, per-class table, confusion matrix, misclassified images here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@_preprocessing_options
@precision_option
@progress_option
@click.pass_context
@_fail_cleanly
def evaluate(ctx, data, weights, list_file, root, ten_crop, batch_size, report, as_json, mean_file, resize, precision,
             progress):
    """Measure a model on DATA/<class>/<images> (folders matched to class names) or a --list file."""
    if (data is None) == (list_file is None):
        raise click.UsageError("give either DATA (class folders) or --list FILE")
    from alexft.weights.sources import resolve_weights

    weights = resolve_weights(weights, progress=progress)
    preprocessing = _preprocessing(mean_file, resize)
    from alexft.evaluation import evaluate as run_evaluate, labelled_folder, labelled_list

    predictor = _tensorflow_predictor(weights, progress, preprocessing, precision)
    if list_file is not None:
        files = labelled_list(list_file, root or list_file.parent, len(predictor.class_names))
    else:
        files = labelled_folder(data, predictor.class_names)
    summary = run_evaluate(predictor, files, ten_crop=ten_crop, batch_size=batch_size, progress=progress, report=report)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
    else:
        click.echo(_describe_evaluation(summary))
    for message in summary["skipped_files"].values():
        click.echo(f"error: {message}", err=True)
    if summary["skipped"]:
        click.echo(f"alexft: {summary['skipped']} of {summary['images'] + summary['skipped']} images could not be used",
                   err=True)
        ctx.exit(EXIT_INPUT_FAILED)


def _describe_evaluation(summary):
    lines = [f"images: {summary['images']} used, {summary['skipped']} skipped", "",
             f"{'protocol':10s} {'top-1':>7s} {'top-5':>7s} {'class-mean':>10s} {'log loss':>9s}"]
    for protocol in ("centre", "ten_crop"):
        if protocol in summary:
            m = summary[protocol]
            top5 = f"{m['top5']:7.2%}" if m["top5"] is not None else f"{'-':>7s}"
            lines.append(f"{protocol:10s} {m['top1']:7.2%} {top5} {m['mean_class_accuracy']:10.2%} {m['log_loss']:9.4f}")
    protocol = "ten_crop" if "ten_crop" in summary else "centre"
    confused = summary[protocol]["most_confused"][:5]
    if confused:
        lines += ["", f"most confused, {protocol} (true -> predicted):"]
        lines += [f"  {pair['count']:5d}  {pair['true']} -> {pair['predicted']}" for pair in confused]
    return "\n".join(lines)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@weights_option
@click.option("--layer", default="fc7", show_default=True,
              type=click.Choice(["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]),
              help="The layer whose activations are written (after its ReLU; fc8: the logits).")
@click.option("--ten-crop", is_flag=True, help="Average the activations of Caffe's ten crops.")
@click.option("--output", required=True, type=click.Path(path_type=Path, dir_okay=False), help="The .npz to write.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch.")
@shard_option
@_preprocessing_options
@precision_option
@progress_option
@click.pass_context
@_fail_cleanly
def features(ctx, inputs, weights, layer, ten_crop, output, batch_size, shard, mean_file, resize, precision, progress):
    """Write a layer's activations for images (files or folders) to an .npz.

    One folder laid out as <class>/<images> also stores each image's label and the class names.
    Exit status 1 if any input could not be used; the others are still written.
    """
    from alexft.data import images_with_labels
    from alexft.pipeline import shard as shard_of
    from alexft.weights.sources import resolve_weights

    paths, labels, class_names = images_with_labels(inputs)
    if labels is None:
        paths = _expand_inputs(inputs)  # the same as find_images, and says which folders were empty
    weights = resolve_weights(weights, progress=progress)
    preprocessing = _preprocessing(mean_file, resize)
    predictor = _tensorflow_predictor(weights, progress, preprocessing, precision)
    from alexft.features import extract_features

    if shard:  # labels and class names come from the whole listing, so every shard agrees on them
        chosen = shard_of(range(len(paths)), *shard)
        paths = [paths[index] for index in chosen]
        labels = labels[chosen] if labels is not None else None
    written, skipped = extract_features(predictor.model, paths, layer, output, ten_crop=ten_crop, labels=labels,
                                        class_names=class_names, batch_size=batch_size, progress=progress,
                                        preprocessing=preprocessing)
    for message in skipped.values():
        click.echo(f"error: {message}", err=True)
    click.echo(f"{output}: {layer} features of {written} images" + (f" ({len(skipped)} skipped)" if skipped else ""))
    if skipped:
        click.echo(f"alexft: {len(skipped)} of {len(paths)} inputs could not be used", err=True)
        ctx.exit(EXIT_INPUT_FAILED)


def _layer_list(ctx, param, value):
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return "all" if names == ["all"] else names


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


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@weights_option
@click.option("--skip", default="fc8", show_default=True, callback=_layer_list,
              help="Layers not loaded from the weights (fresh init), comma-separated: conv1-conv5, fc6-fc8.")
@click.option("--train", "train_layers", default=None, callback=_layer_list,
              help="Layers that learn, comma-separated (conv1-conv5, fc6-fc8), or 'all'. Default: the skipped ones.")
@click.option("--epochs", default="auto", show_default=True, type=_OptionValue("N|auto", "parse_epochs"), metavar="N|auto",
              help="Passes over the training images, or 'auto': 10 on images; on the feature cache, enough for "
                   "1000 steps (10-200 epochs). With --resume: may grow.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images per training step.")
@click.option("--lr", default="auto", show_default=True, type=_OptionValue("RATE|auto", "parse_rate"), metavar="RATE|auto",
              help="Base learning rate, or 'auto': measured by a range test on the training data before the first "
                   "epoch (lr_find.png). Fresh layers learn 10x faster and biases 2x; the rate drops to a tenth for "
                   "the last third of the epochs. With --resume: a new rate from now on.")
@click.option("--val-dir", type=click.Path(path_type=Path, exists=True, file_okay=False), help="Validation class folders (default: DATA_DIR/val if present).")
@click.option("--val-split", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="Fraction held out per class when there is no validation folder.")
@click.option("--ten-crop", is_flag=True, help="Validate on the average of Caffe's ten crops (default: centre crop).")
@click.option("--output", type=click.Path(path_type=Path, file_okay=False), help="Run folder. Default: runs/<timestamp>.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last checkpoint.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the split, the data order, the crops and dropout.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, gpu or gpu:N.")
@click.option("--strategy", default="auto", show_default=True, type=click.Choice(["auto", "one", "mirrored", "multiworker"]), help="multiworker: across machines, configured by TF_CONFIG (docs/cluster.md).")
@click.option("--heartbeat-timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help="multiworker: silence after which a worker counts as lost; the same on every worker. "
                   "Default: $ALEXFT_HEARTBEAT_TIMEOUT, else 120.")
@click.option("--mixed-precision/--no-mixed-precision", default=None, help="16-bit compute: float16 on GPUs, bfloat16 on CPUs that have it (avx512_bf16, amx_bf16). Default: on for GPUs, off for CPUs.")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Train the top layers on cached features of the frozen part.")
@click.option("--dropout", default=0.5, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Dropout rate of fc6 and fc7 while training.")
@click.option("--max-broken", default=0.1, show_default=True, type=click.FloatRange(0, 1), help="Stop when more than this fraction of images is broken.")
@click.option("--max-recoveries", default=3, show_default=True, type=click.IntRange(min=0),
              help="Times a diverging epoch is restarted from the last good state at a tenth of the rate before the run stops.")
@click.option("--keep-last", is_flag=True, help="Also keep the last epoch's trained layers (last_layers.npz).")
@click.option("--keep-checkpoint", is_flag=True, help="Keep checkpoint.npz after the run finishes (to --resume with more --epochs).")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON object.")
@progress_option
@_fail_cleanly
def finetune(data_dir, weights, train_layers, output, resume, as_json, progress, **values):
    """Fine-tune AlexNet on DATA_DIR/<class>/<images> (or DATA_DIR/train + DATA_DIR/val).

    Writes model.npz (the best epoch, from epoch 1 on), history.csv, curves.png, lr_find.png,
    config.json, classes.json and TensorBoard logs into the run folder; checkpoint.npz while
    it runs. Exit status 130/143 when stopped by Ctrl-C/SIGTERM (model.npz and the checkpoint stay).
    """
    from alexft.train_options import TrainOptions

    values["ten_crop_val"] = values.pop("ten_crop")
    values["val_dir"] = values["val_dir"] and str(values["val_dir"])
    options = TrainOptions(train=train_layers, **values)
    dataset, weights = _check_before_training(data_dir, options, weights, output, resume, progress)
    # Said before TensorFlow's seconds of start-up, so a log shows at once what the run found.
    click.echo(f"alexft: {data_dir}: {len(dataset.class_names):,} classes, {len(dataset.train):,} training and "
               f"{len(dataset.val):,} validation images; weights {weights}", err=True)
    import_tensorflow_quietly()
    from alexft.train import TrainingInterrupted, finetune as run_finetune
    try:
        summary = run_finetune(data_dir, options, weights=weights, output=output, resume=resume, progress=progress,
                               dataset=dataset)
    except TrainingInterrupted as interrupted:
        click.echo(f"alexft: {interrupted}", err=True)
        sys.exit(128 + interrupted.signal_number)
    except KeyboardInterrupt:  # before the first epoch started: there is nothing to save yet
        click.echo("alexft: interrupted before training started; nothing was saved", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(_describe_summary(summary))


def _check_before_training(data_dir, options, weights, output, resume, progress):
    """What can be refused without TensorFlow is refused before its seconds of start-up: the
    data's layout, a run folder already in use, missing weights. Returns (dataset, weights file)."""
    from alexft.data import load_dataset
    from alexft.run_folder import RunFolder
    from alexft.weights.sources import resolve_weights

    dataset = load_dataset(data_dir, val_dir=options.val_dir, val_split=options.val_split, seed=options.seed)
    if output is not None and not resume and options.strategy != "multiworker":
        RunFolder(output).refuse_existing()
    return dataset, resolve_weights(weights, progress=progress)


def _describe_summary(summary):
    best = summary["best"]
    lines = [f"run folder: {summary['run']}",
             f"epochs: {summary['epochs']} (model.npz holds epoch {summary['best_epoch']})",
             f"base learning rate: {summary['base_lr']:.3g}" + (" (chosen by the range test)" if summary["lr"] == "auto" else "")
             + (f", after {summary['recoveries']} recoveries from divergence" if summary["recoveries"] else "")]
    for name, metrics in (("best", best), ("last", summary)):
        line = f"{name}: train loss {metrics['train_loss']:.4f}, accuracy {metrics['train_accuracy']:.3f}"
        if metrics["val_accuracy"] is not None:
            line += f"; val loss {metrics['val_loss']:.4f}, accuracy {metrics['val_accuracy']:.3f}"
        lines.append(line)
    lines.append(f"images: {summary['train_images']} training, {summary['val_images']} validation")
    if summary["broken_files"]:
        lines.append(f"broken files skipped: {summary['broken_files']} (listed in broken_files.json)")
    return "\n".join(lines)


@main.group("weights")
def weights_group():
    """Get, inspect and convert weights files."""


@weights_group.command("fetch")
@click.option("--url", help="Where to download from (URL#sha1=HEX or URL#sha256=HEX pins its hash). Default: "
              "$ALEXFT_WEIGHTS_URL, else the BVLC model zoo's bvlc_alexnet.caffemodel (SHA-1 verified), then "
              "the unverified bvlc_alexnet.npy.")
@click.option("--sha256", help="Expected SHA-256 (hex). Default: the source's published hash, or "
              "$ALEXFT_WEIGHTS_SHA256 for a single $ALEXFT_WEIGHTS_URL.")
@click.option("--sha1", help="Expected SHA-1 (hex), as the Caffe model zoo publishes them.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="File to write. Default: the cache, under the URL's file name.")
@click.option("--force", is_flag=True, help="Download again even if the file is already there.")
@progress_option
@_fail_cleanly
def weights_fetch(url, sha256, sha1, output, force, progress):
    """Download a weights file: resumable, verified, renamed into place only when complete."""
    from alexft.weights.sources import fetch_weights

    path, downloaded = fetch_weights(url=url, sha256=sha256, sha1=sha1, output=output, force=force, progress=progress)
    if not downloaded:
        click.echo(f"alexft: {path} is already there and valid (--force downloads again)", err=True)
    click.echo(str(path))


@weights_group.command("info")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.pass_context
@_fail_cleanly
def weights_info(ctx, file, as_json):
    """Format, source, layers, shapes, parameter count, classes, hashes of a weights file.

    Exit status 1 if the file cannot be used as AlexNet weights (the reason is shown).
    """
    from alexft.weights.sources import identify
    from alexft.weights.tools import describe

    facts = describe(file)
    facts["source"] = identify(file)
    click.echo(json.dumps(facts, ensure_ascii=False) if as_json else _describe_weights(facts))
    if facts["problem"]:
        ctx.exit(1)


def _describe_weights(facts):
    lines = [f"file: {facts['path']}", f"format: {facts['format_description']}",
             f"size: {facts['bytes']:,} bytes", f"sha256: {facts['sha256']}", f"sha1: {facts['sha1']}",
             f"source: {facts['source'] or 'unknown (not a published file, nor one alexft downloaded or converted here)'}"]
    for layer in facts["layers"]:
        kernel, bias = layer["weights"], layer["biases"]
        lines.append(f"  {layer['name']:<6} weights {_shape(kernel):<18} {kernel['dtype']:<8} biases {_shape(bias):<8} {bias['dtype']}")
    lines.append(f"parameters: {facts['parameters']:,}")
    names = facts["class_names"]
    stored = f" ({', '.join(map(repr, names[:5]))}{', ...' if len(names) > 5 else ''})" if names else " (no names stored)"
    lines.append(f"classes: {facts['classes']}{stored}")
    lines.append("layout: canonical bvlc_alexnet" if facts["canonical_layout"] else
                 "layout: AlexNet with a different class count" if not facts["problem"] else f"problem: {facts['problem']}")
    return "\n".join(lines)


def _shape(array_facts):
    return str(tuple(array_facts["shape"]))


@weights_group.command("convert")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("destination", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--class-names", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="Text file, one class name per line, stored with the weights.")
@click.option("--rename", "renames", multiple=True, metavar="NAME=LAYER",
              help="A .caffemodel layer stored under another name, e.g. fc8_flickr=fc8 (repeatable). A single "
                   "renamed layer is found without it.")
@_fail_cleanly
def weights_convert(source, destination, class_names, renames):
    """Convert SOURCE (.npy pickle, .npz or Caffe .caffemodel) to DESTINATION.npz (pickle-free, fast to load)."""
    from alexft.weights.tools import convert, parse_renames, read_class_names

    names = read_class_names(class_names) if class_names else None
    weight_set = convert(source, destination, class_names=names, renames=parse_renames(renames))
    click.echo(f"{destination}: {weight_set.num_classes} classes, from {source}")


@main.command()
@click.argument("output", type=click.Path(path_type=Path))
@weights_option
@click.option("--format", "file_format", default="savedmodel", show_default=True, type=click.Choice(["savedmodel", "tflite"]),
              help="savedmodel: a folder for TF Serving (takes image bytes, or preprocessed views); tflite: one file for phones.")
@click.option("--top-k", "top", default=5, show_default=True, type=click.IntRange(min=1), help="Classes returned per image.")
@click.option("--quantize", type=click.Choice(["float16", "int8"]),
              help="TF Lite only. float16: weights in half precision (half the file); int8: weights and activations "
                   "in 8 bits (a quarter), calibrated on --calibration images. Default: float32.")
@click.option("--calibration", type=click.Path(path_type=Path, exists=True),
              help="Images (a folder, searched recursively) like those the model will see, for --quantize int8; "
                   "at most 200 are used, spread over the folder.")
@precision_option
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@_fail_cleanly
def export(output, weights, file_format, top, quantize, calibration, precision, force):
    """Export the model with its class labels for serving, to OUTPUT."""
    from alexft.quantize import Quantization, QuantizationError
    from alexft.weights.sources import resolve_weights

    if quantize and file_format != "tflite":
        raise click.UsageError("--quantize needs --format tflite")
    if precision != "float32" and file_format == "tflite":
        raise click.UsageError("TF Lite has no bfloat16 kernels: use --quantize float16 or int8 for a smaller, faster file")
    try:
        quantization = Quantization.from_options(quantize, calibration) if quantize else None
    except QuantizationError as error:
        raise click.UsageError(str(error)) from None
    if calibration is not None and quantization is None:
        raise click.UsageError("--calibration is for --quantize int8")
    if output.exists() and not force:
        raise click.ClickException(f"{output}: already exists; pass --force to replace it")
    weights = resolve_weights(weights)  # before TensorFlow: a missing file is said at once
    import_tensorflow_quietly()
    from alexft.export import export as export_model, labels_path

    path = export_model(weights, output, file_format=file_format, top_k=top, force=force, quantization=quantization,
                        precision=precision)
    extra = f" (labels in {labels_path(path)})" if file_format == "tflite" else ""
    kind = ", ".join([file_format] + ([quantize] if quantize else []) + ([precision] if precision != "float32" else []))
    click.echo(f"{path}: {kind}, {_size(path)}{extra}")


def _size(path):
    total = path.stat().st_size if path.is_file() else sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return f"{total / 2**20:.0f} MB"


if __name__ == "__main__":
    main()
