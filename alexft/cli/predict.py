"""`classify`, `evaluate` and `features`: images through the network."""
import os
import sys
from pathlib import Path

import click

from alexft import interrupts
from alexft.atomic import json_text
from alexft.errors import AlexftError

from . import examples
from .common import (EXIT_INPUT_FAILED, EnvironmentOption, ImageInput, PathParam, expand_inputs, fail_cleanly,
                     inputs_to_shard, note_top_k, precision_option, preprocessing_from, preprocessing_options,
                     progress_option, read_weights, say_unused, say_warning, shard_option, start_tensorflow,
                     terminating_cleanly, weights_option)


@click.command(short_help="Print the top ImageNet (or your model's) classes of images.",
               epilog=examples.epilog("classify"))
@click.argument("inputs", nargs=-1, required=True, type=ImageInput())
@weights_option
@click.option("-k", "--top-k", "top", default=5, show_default=True, type=click.IntRange(min=1), help="Classes shown per image.")
@click.option("--ten-crop", is_flag=True, help="Average Caffe's ten crops instead of the centre crop.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines on stdout, one object per image.")
@click.option(
    "--runtime", type=click.Choice(["auto", "tensorflow", "litert", "openvino"]), default="auto", show_default=True,
    envvar="ALEXFT_RUNTIME", show_envvar=True, cls=EnvironmentOption,
    help="auto: up to 128 views (images, or ten each with --ten-crop) on LiteRT, which starts in a fraction of "
         "a second, from a copy of the weights built once in the cache; longer runs on TensorFlow. openvino: "
         "OpenVINO's CPU plugin, if installed; fastest at small batches, and starts without TensorFlow.")
@shard_option
@preprocessing_options
@precision_option
@progress_option
@click.pass_context
@fail_cleanly
@terminating_cleanly()  # SIGTERM as Ctrl-C: the lines printed stay, scratch files go
def classify(ctx, inputs, weights, top, ten_crop, batch_size, as_json, runtime, shard, mean_file, resize, precision,
             progress):
    """Print the top classes of images: files, folders (searched recursively), http(s) URLs,
    or - for one image on standard input.

    Exit status 1 if any input could not be used; all others are still classified.
    """
    from alexft import fast_start
    from alexft.pipeline import sorted_shard
    from alexft.predict import classify as classify_images
    from alexft.weights.sources import resolve_weights

    if precision != "float32" and runtime != "openvino":
        if runtime == "litert":
            raise click.BadParameter("litert computes in float32; --precision bfloat16 runs on TensorFlow or OpenVINO",
                                     ctx, _runtime_option(ctx))
        runtime = "tensorflow"
    _check_runtime_installed(runtime, ctx)
    paths = expand_inputs(inputs_to_shard(inputs, shard))  # without --shard: in the order typed
    if shard:  # the sorted list's part, whatever the order typed: every process cuts the same list
        paths = [paths[position] for position in sorted_shard(paths, *shard)]
        if not paths:
            return  # more shards than images: this one has nothing to do
    weights = resolve_weights(weights, progress=progress)  # before TensorFlow: a missing file is said at once
    preprocessing = preprocessing_from(mean_file, resize)
    on_litert = fast_start.suits(runtime, len(paths) * (10 if ten_crop else 1))
    copy_seen = fast_start.copy_stamp(weights)  # a copy another process builds meanwhile is not built again
    predictor = on_litert and _litert_predictor(weights, preprocessing, runtime)
    if not predictor:
        predictor = _predictor(weights, progress, preprocessing, precision, runtime)
    note_top_k(ctx, top, len(predictor.class_names))
    failures = 0
    for result in classify_images(predictor, paths, top=top, ten_crop=ten_crop, batch_size=batch_size, progress=progress):
        failures += "error" in result
        _print_result(result, as_json)
    sys.stdout.flush()
    if failures:
        say_unused(failures, len(paths), "input", "classified")
    # Built only after a call that classified something: a mistyped or broken photo is not
    # worth the seconds, and the user's next call, the right one, builds it.
    if on_litert and failures < len(paths) and not isinstance(predictor, fast_start.LitePredictor):
        del predictor  # the build loads a second network
        _build_litert_copy(weights, copy_seen)
    if failures:
        ctx.exit(1)


def _litert_predictor(weights, preprocessing, runtime):
    """The LiteRT predictor, or None for TensorFlow. `auto` builds a missing copy after the
    results, so a first call answers as soon as before, and replaces a copy LiteRT refuses."""
    from alexft import fast_start

    try:
        return fast_start.load_litert_predictor(weights, preprocessing, build=runtime == "litert",
                                                skipped_by=fast_start.SKIPPED_BY_COMMAND)
    except fast_start.FastStartError as error:
        if runtime == "litert":
            raise
        click.echo(f"alexft: warning: {error}; answering on TensorFlow, then building it again", err=True)
        return None


def _check_runtime_installed(runtime, ctx):
    """`--runtime openvino` without OpenVINO is the command line's mistake, said before any work."""
    from alexft.openvino_runtime import openvino_installed

    if runtime == "openvino" and not openvino_installed():
        raise click.BadParameter("OpenVINO is not installed: pip install openvino (or 'alexft[openvino]')",
                                 ctx, _runtime_option(ctx))


def _runtime_option(ctx):
    """The command's --runtime, whose errors name $ALEXFT_RUNTIME when the value came from it."""
    return next(param for param in ctx.command.params if param.name == "runtime")


def _predictor(weights, progress, preprocessing, precision="float32", runtime="tensorflow"):
    """The network on TensorFlow (or OpenVINO), the weights (a file, or a WeightSet already read) read first."""
    from alexft.weights import as_weight_set

    weight_set = as_weight_set(weights)  # before TensorFlow: a wrong or broken file is said at once
    if runtime != "openvino":
        start_tensorflow()
        runtime = "tensorflow"
    from alexft.predict import load_predictor

    return load_predictor(weight_set, progress=progress, preprocessing=preprocessing, precision=precision,
                          runtime=runtime)


def _feature_network(weight_set, layer, precision):
    """The network up to `layer` on TensorFlow, from weights read and checked for it."""
    start_tensorflow()
    from alexft.predict import inference_network

    return inference_network(weight_set, precision, last=layer)


def _build_litert_copy(weights, seen):
    """The one-off build `--runtime auto` does after its results; a failure only costs the fast
    start. A stop gives the build up and stops the command as any stop does (130/143): a shell
    loop of classify calls must end there, not start the build again on the next photo."""
    from alexft import fast_start

    try:
        fast_start.build_copy_unless_another_is(weights, seen)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM
        _build_stopped()
        raise
    except Exception as error:
        if interrupts.pending():  # a stop inside the converter can surface as its own error
            _build_stopped()
            interrupts.raise_if_pending()
        elif isinstance(error, AlexftError):
            click.echo(f"alexft: warning: no LiteRT copy was built, short calls stay on TensorFlow: {error}", err=True)
        else:
            raise
    interrupts.raise_if_pending()  # a stop the converter swallowed, the copy built all the same


def _build_stopped():
    click.echo("alexft: the LiteRT copy was not finished; the next short classify builds it", err=True)


def _say_error(message):
    from alexft.progress import beside_bars

    with beside_bars(sys.stderr):
        click.echo(f"error: {message}", err=True)


def shown_to(stream, name):
    """A file name as printed on `stream`: on a terminal, `shell_quoted`, as `ls` quotes; piped,
    as it is (a name that is not UTF-8 as its bytes: cli._standard_streams_ready)."""
    isatty = getattr(stream, "isatty", None)
    return shell_quoted(name) if isatty is not None and isatty() else name


def shell_quoted(name):
    """A file name as it can be pasted back into a shell: as it is when every character prints,
    else in bash's $'...' quoting (a newline had split a result across lines on a terminal; a
    byte that is not UTF-8 showed as a replacement character, which names no file)."""
    if name.isprintable():
        return name
    quoted = []
    for character in name:
        code = ord(character)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as Python holds file names
            quoted.append(f"\\x{code - 0xDC00:02x}")
        elif character in "\\'":
            quoted.append("\\" + character)
        elif character.isprintable():
            quoted.append(character)
        else:
            quoted.append(f"\\x{code:02x}" if code < 0x80 else f"\\U{code:08x}")  # (bash writes \U as UTF-8)
    return "$'" + "".join(quoted) + "'"


def _print_result(result, as_json):
    from alexft.progress import beside_bars

    path = str(result["path"])
    if "error" in result:  # named on stderr also with --json, as the exit status promises
        # (an AlexftError's message is one line: white space in the name is a space there, kept in a pipe)
        shown = shown_to(sys.stderr, path)
        _say_error(result["error"].replace(" ".join(path.split()), shown) if shown != path else result["error"])
        if not as_json:
            return
    if as_json:
        lines, stream = [json_text(result)], sys.stdout
    else:
        lines = [shown_to(sys.stdout, path)] + [f"  {p['probability']:7.2%}  {p['label']}" for p in result["predictions"]]
        stream = sys.stdout
    with beside_bars(stream):
        click.echo("\n".join(lines), file=stream)


@click.command(short_help="Score a model on labelled images (centre crop, or Caffe's 10 crops).",
               epilog=examples.epilog("evaluate"))
@click.argument("data", required=False, type=PathParam(exists=True, file_okay=False))
@weights_option
@click.option("--list", "list_file", type=PathParam(exists=True, dir_okay=False), help="Caffe list file: 'relative/path label_index' per line (ILSVRC val.txt).")
@click.option("--root", type=PathParam(exists=True, file_okay=False), help="Folder the --list paths are relative to.")
@click.option("--ten-crop", is_flag=True, help="Also report Caffe's 10-crop protocol (the centre crop is one of the ten).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch.")
@click.option("--report", type=PathParam(), help="Write metrics, per-class table, confusion matrix, misclassified images here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@click.option("--runtime", type=click.Choice(["tensorflow", "openvino"]), default="tensorflow", show_default=True,
              help="openvino: OpenVINO's CPU plugin, if installed; starts without TensorFlow.")
@preprocessing_options
@precision_option
@progress_option
@click.pass_context
@fail_cleanly
@terminating_cleanly()  # SIGTERM as Ctrl-C: the lines printed stay, scratch files go
def evaluate(ctx, data, weights, list_file, root, ten_crop, batch_size, report, as_json, runtime, mean_file, resize,
             precision, progress):
    """Measure a model on DATA/<class>/<images> (folders matched to class names) or a --list file."""
    if (data is None) == (list_file is None):
        raise click.UsageError("give either DATA (class folders) or --list FILE")
    if root is not None and list_file is None:  # it would be ignored, and the user measured what they did not mean
        raise click.UsageError("--root is the folder --list paths are relative to; with DATA it has no meaning")
    _check_runtime_installed(runtime, ctx)
    from alexft import weights as weights_io

    if data is not None:  # the layout first: the class names it is matched to come with the weights
        from alexft.data import DataError, class_folders

        if not class_folders(data):  # the data's mistake, not the command line's: exit 1, as in finetune
            raise DataError(f"{data}: no class sub-folders; expected {data}/<class name>/<images>")
        _warn_of_loose_images(data)
    from alexft.errors import AlexftError
    from alexft.evaluation import check_report_folder, is_within, labelled_folder, labelled_list, measure

    listed = None
    if list_file is not None:  # its form and whereabouts now; the labels' range needs the model's classes
        listed = labelled_list(list_file, root or list_file.parent)
    if report is not None:
        if data is not None and is_within(report, data):  # its figures would be taken for images next time
            raise click.UsageError(f"--report {report} is inside {data}, the class folders being evaluated; "
                                   "choose a folder outside it")
        check_report_folder(report)  # before the work, which would be lost
    # The weights are read before TensorFlow starts: folders or labels that do not match their
    # classes are said at once, not after its seconds of start-up.
    if data is not None and weights is None and _defaults_to_download():
        # They will be ImageNet's: folders that are not its classes are said before 233 MB of download.
        labelled_folder(data, weights_io.default_class_names(1000))
    weight_set = read_weights(weights, progress=progress)
    preprocessing = preprocessing_from(mean_file, resize)
    class_names = weights_io.class_names_for(weight_set)
    if listed is not None:
        files = listed
        if files.labels.max() >= len(class_names):  # read again only to name the first line out of range
            labelled_list(list_file, root or list_file.parent, len(class_names))
    else:
        files = labelled_folder(data, class_names)
    predictor = _predictor(weight_set, progress, preprocessing, precision, runtime)
    evaluation = measure(predictor, files, ten_crop=ten_crop, batch_size=batch_size, progress=progress,
                         on_skip=_say_error)  # each as it is met, as classify does, not after the whole run
    summary = evaluation.summary  # with what was measured, so that two results (or reports) can be told apart later
    summary["measured_with"] = dict(weights=str(weight_set.path) if weight_set.path else None, runtime=runtime,
                                    precision=precision)
    if as_json:
        click.echo(json_text(summary))
    else:
        click.echo(_describe_evaluation(summary))
    failed = bool(summary["skipped"])
    if failed:
        folders = any(os.path.isdir(path) for path in summary.get("skipped_files", ()))  # (a folder that cannot be listed)
        say_unused(summary["skipped"], summary["images"] + summary["skipped"], "input" if folders else "image", "used")
    if report is not None:
        try:
            evaluation.write_report(report)
        except AlexftError as error:  # the figures are printed above: only the report is missing
            click.echo(f"error: {error}", err=True)
            failed = True
        else:
            click.echo(f"alexft: report written to {report}", err=True)
            if interrupts.pending():  # honoured when the command returns: said to be about a whole report
                click.echo("alexft: the stop came while the report was written; it was finished first", err=True)
    if failed:
        ctx.exit(EXIT_INPUT_FAILED)


def _warn_of_loose_images(data):
    from alexft.data import loose_images_warning

    said = loose_images_warning(data, "evaluate")
    if said:
        say_warning(said)


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


def _defaults_to_download():
    """Whether the default weights would be downloaded: none here ($ALEXFT_WEIGHTS unset or naming
    nothing, no bvlc_alexnet.* in the places looked at)."""
    from alexft.weights.sources import found_locally

    return not os.environ.get("ALEXFT_WEIGHTS") and found_locally() is None


def _say_why_unlabelled(inputs):
    """Inputs that look like labelled data but are read without labels: said, with the way to
    have them (one folder laid out as <class>/<images>, given alone)."""
    from alexft.data import class_folders, loose_images
    from alexft.preprocess import is_folder

    folders = [path for path in inputs if is_folder(path)]
    laid_out = [path for path in folders if class_folders(path) and not loose_images(path)]
    if len(inputs) == 1 and folders and loose_images(folders[0]) and class_folders(folders[0]):
        click.echo(f"alexft: note: {folders[0]} holds images beside its sub-folders, so it is read as plain images, every "
                   "one below it, without class labels (labels need <class>/<images> only)", err=True)
    elif len(inputs) > 1 and laid_out:
        click.echo(f"alexft: note: {len(inputs)} inputs are read as plain images, without class labels: labels come "
                   f"from one folder laid out as <class>/<images> (such as {laid_out[0]}) given alone", err=True)
    elif len(inputs) > 1 and len(folders) == len(inputs) and _all_of_one_parent(folders):
        click.echo(f"alexft: note: {len(inputs)} folders are read as plain images, without class labels: for labels, "
                   f"give their parent folder alone ({Path(inputs[0]).parent}), laid out as <class>/<images>", err=True)


def _all_of_one_parent(folders):
    """Whether the folders share a parent laid out as <class>/<images>: no images beside its
    sub-folders, each of which holds images or nothing. (`photos bad big`, given from a working
    folder holding much else, were told to give that folder for labels.)"""
    from alexft.data import class_folders, loose_images

    parents = {Path(path).absolute().parent for path in folders}
    if len(parents) != 1:
        return False
    parent = parents.pop()
    try:
        return not loose_images(parent) and all(_holds_images_or_nothing(parent / name) for name in class_folders(parent))
    except (OSError, AlexftError):  # a parent that cannot be listed lays nothing out
        return False


def _holds_images_or_nothing(folder):
    from alexft.preprocess import is_image_file

    entries = [entry for entry in os.scandir(folder) if not entry.name.startswith(".")]
    return not entries or any(is_image_file(entry.name) for entry in entries)


def _check_features_output(output, force):
    """An .npz that may be written, checked before TensorFlow starts; a wrong name is a usage error."""
    from alexft.feature_files import OutputNameError, check_output

    try:
        check_output(output, force, option="--force")
    except OutputNameError as error:
        raise click.UsageError(str(error)) from None


@click.command(short_help="Write a layer's activations for images to an .npz.", epilog=examples.epilog("features"))
@click.argument("inputs", nargs=-1, required=True, type=ImageInput())
@weights_option
@click.option("--layer", default="fc7", show_default=True,
              type=click.Choice(["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]),
              help="The layer whose activations are written (after its ReLU; fc8: the logits).")
@click.option("--ten-crop", is_flag=True, help="Average the activations of Caffe's ten crops.")
@click.option("-o", "--output", required=True, type=PathParam(as_text=True), help="The .npz to write.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it is an earlier feature file.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch.")
@shard_option
@preprocessing_options
@precision_option
@progress_option
@click.pass_context
@fail_cleanly
@terminating_cleanly()  # SIGTERM as Ctrl-C: the lines printed stay, scratch files go
def features(ctx, inputs, weights, layer, ten_crop, output, force, batch_size, shard, mean_file, resize, precision,
             progress):
    """Write a layer's activations for images (files, folders, http(s) URLs, or - for one image
    on standard input) to an .npz.

    One folder laid out as <class>/<images> also stores each image's label and the class names.
    Exit status 1 if any input could not be used; the others are still written.
    """
    from alexft import architecture as arch
    from alexft.data import images_with_labels
    from alexft.feature_files import TenCropOfMapsError
    from alexft.pipeline import sorted_shard
    from alexft.preprocess import distinct_inputs
    from alexft.weights import layers_above

    _check_features_output(output, force)  # before TensorFlow and the work, not after
    output = Path(output)
    if ten_crop and not isinstance(arch.LAYERS.get(layer), arch.Dense):
        raise click.UsageError(str(TenCropOfMapsError(layer, "--ten-crop")))
    # `cl cl/` or `cl cl/cats` is one class folder, with its labels
    inputs = distinct_inputs(inputs_to_shard(inputs, shard), say=say_warning)
    paths, labels, class_names = images_with_labels(inputs)
    if labels is None:
        paths = expand_inputs(inputs)  # the same as find_images, and says which folders were empty
        _say_why_unlabelled(inputs)
    # A file without the layers above --layer (a headless fc7 extractor's) serves: they are not built.
    weight_set = read_weights(weights, progress=progress, skip=layers_above(layer))
    preprocessing = preprocessing_from(mean_file, resize)
    network = _feature_network(weight_set, layer, precision)
    from alexft.features import extract_features

    if shard:  # the sorted list's part; labels and class names come from the whole listing, so every shard agrees
        chosen = sorted_shard(paths, *shard)
        paths = [paths[index] for index in chosen]
        labels = labels[chosen] if labels is not None else None
    # The inputs are expanded and labelled here: its only note would be "no features written",
    # which the last line below says after each input's error.
    earlier = output.exists()
    try:
        written, skipped = extract_features(network, paths, layer, output, ten_crop=ten_crop, labels=labels,
                                            class_names=class_names, batch_size=batch_size, progress=progress,
                                            preprocessing=preprocessing, say=lambda note: None,  # output checked, with --force
                                            on_skip=_say_error)  # as met: an interrupted run names them too
    except KeyboardInterrupt:  # said before "interrupted": the file is written whole at the end, or not at all
        click.echo(f"alexft: {output}: " + ("not replaced, the earlier file is as it was" if earlier else "not written"),
                   err=True)
        raise
    if written or not skipped:
        click.echo(f"{output}: {layer} features of {written} image{'' if written == 1 else 's'}"
                   + (f" ({len(skipped)} skipped)" if skipped else ""))
    if skipped:
        none = "its one input could not" if len(paths) == 1 else f"none of the {len(paths)} inputs could"
        if written:
            say_unused(len(skipped), len(paths), "input", "used")
        else:
            click.echo(f"alexft: no features written to {output}: {none} be used", err=True)
        ctx.exit(EXIT_INPUT_FAILED)
