"""`weights fetch`, `weights info` and `weights convert`."""
import importlib
import json
import os
import shlex
import signal
from pathlib import Path

import click

from alexft.atomic import json_text

from alexft import interrupts

from . import examples
from .common import PathParam, fail_cleanly, progress_option, terminating_cleanly


@click.group("weights")
def weights_group():
    """Get, inspect and convert weights files."""


def _refused_as_usage(check):
    """A click callback: a value `check` refuses (WeightsError) is a usage error, exit 2 as for
    click's own checks, said before anything is downloaded or read."""
    def callback(ctx, param, value):
        if value in (None, ()):
            return value
        from alexft.errors import WeightsError

        try:
            check(value)
        except WeightsError as error:
            raise click.BadParameter(str(error)) from None
        return value

    return callback


def _weights(module):
    """alexft.weights.`module`, imported only when a command runs (it imports numpy)."""
    return importlib.import_module(f"alexft.weights.{module}")


@weights_group.command("fetch", short_help="Download a weights file, resumable and verified.",
                       epilog=examples.epilog("weights fetch"))
@click.option("--url", callback=_refused_as_usage(lambda url: _weights("sources").parse_source(url)),
              help="Where to download from (URL#sha1=HEX or URL#sha256=HEX pins its hash). Default: "
              "$ALEXFT_WEIGHTS_URL, else the BVLC model zoo's bvlc_alexnet.caffemodel (SHA-1 verified), then "
              "the unverified bvlc_alexnet.npy.")
@click.option("--sha256", callback=_refused_as_usage(lambda value: _weights("sources").checked_hex(value, "sha256")),
              help="Expected SHA-256 (hex). Default: the source's published hash, or "
              "$ALEXFT_WEIGHTS_SHA256 for a single $ALEXFT_WEIGHTS_URL.")
@click.option("--sha1", callback=_refused_as_usage(lambda value: _weights("sources").checked_hex(value, "sha1")),
              help="Expected SHA-1 (hex), as the Caffe model zoo publishes them.")
@click.option("-o", "--output", type=PathParam(), callback=_refused_as_usage(lambda path: _weights("sources").check_fetch_output(path)),
              help="File to write (.caffemodel, .npy or .npz), or a folder to write it into under the URL's file name. "
                   "Default: the cache.")
@click.option("--force", is_flag=True, help="Download again even if the file is already there.")
@progress_option
@fail_cleanly
@terminating_cleanly()
def weights_fetch(url, sha256, sha1, output, force, progress):
    """Download a weights file: resumable, verified, renamed into place only when complete."""
    from alexft.weights.sources import candidates, fetch_weights, found_locally

    path, downloaded = fetch_weights(url=url, sha256=sha256, sha1=sha1, output=output, force=force, progress=progress)
    if not downloaded and output is None and url is None and path == found_locally():
        click.echo(f"alexft: {path} is the weights file the commands use already; nothing downloaded (--force "
                   "downloads anyway, into the cache)", err=True)
    elif not downloaded:
        click.echo(f"alexft: {path} is already there; not downloaded again (--force does)", err=True)
    named = os.environ.get("ALEXFT_WEIGHTS")
    if named and not Path(named).expanduser().is_file():  # the commands go by it, and would still fail
        click.echo(f"alexft: warning: $ALEXFT_WEIGHTS names {named}, which is not there, and the commands look there "
                   f"first: point it at {shlex.quote(str(path))}, or unset it", err=True)
    elif all(path.resolve() != place.resolve() for _, place in candidates()):  # else a second download follows
        click.echo(f"alexft: note: commands use {path.name} only when given it (--weights {shlex.quote(str(path))}); without "
                   "--weights they look for bvlc_alexnet.npz, .npy or .caffemodel in weights/ or the cache", err=True)
    click.echo(str(path))


@weights_group.command("info", short_help="Describe a weights file: format, source, layers, classes.",
                       epilog=examples.epilog("weights info"))
@click.argument("file", type=PathParam(weights=True))  # a folder is said as such, in --json too
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.pass_context
@fail_cleanly
def weights_info(ctx, file, as_json):
    """Format, source, layers, shapes, parameter count, classes, hashes of a weights file.

    Exit status 1 if the file cannot be used as AlexNet weights (the reason is shown).
    """
    from alexft.errors import AlexftError
    from alexft.weights.sources import identify
    from alexft.weights.tools import describe

    try:
        facts = describe(file)
    except AlexftError as error:
        if not as_json:
            raise
        # --json promises one object: a file that cannot even be read gives its path and why.
        click.echo(json_text({"path": str(file), "problem": str(error)}))
        click.echo(f"Error: {error}", err=True)
        ctx.exit(1)
    facts["source"] = (identify(file, {"sha1": facts["sha1"], "sha256": facts["sha256"]})  # hashed once
                       or _fine_tuned_here(file))
    click.echo(json_text(facts) if as_json else _describe_weights(facts))
    if facts["problem"]:
        click.echo(f"Error: {facts['problem']}", err=True)  # the exit status's reason, where errors go
        ctx.exit(1)


def _fine_tuned_here(file):
    """A run's model.npz is rewritten as the run goes, so no hash can know it: its run folder's
    config.json does."""
    if file.name not in ("model.npz", "last_layers.npz"):
        return None
    try:
        config = json.loads((file.parent / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "data_dir" not in config:
        return None
    trained = ",".join(config.get("train") or config.get("skip") or []) or "?"
    return f"fine-tuned by alexft (run folder {file.parent}: {trained} trained on {config['data_dir']})"


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
    if facts["classes"] is None:  # no usable fc8: the names stored cannot be said to be its classes
        stored = f" ({len(names)} names stored)" if names else ""
    elif names and len(names) != facts["classes"]:  # listed as its classes, they read as a contradiction of the problem below
        stored = f" ({len(names)} names stored, which do not fit)"
    lines.append(f"classes: {'unknown, no usable fc8' if facts['classes'] is None else facts['classes']}{stored}")
    lines.append("layout: canonical bvlc_alexnet" if facts["canonical_layout"] else
                 "layout: AlexNet with a different class count" if not facts["problem"] else f"problem: {facts['problem']}")
    return "\n".join(lines)


def _shape(array_facts):
    return str(tuple(array_facts["shape"]))


def _destination_checked(ctx, param, value):
    """convert's DESTINATION, a usage error if it is no .npz name; SOURCE, read first, names the
    file suggested."""
    source = ctx.params.get("source")
    return _refused_as_usage(lambda path: _weights("tools").check_destination_name(path, source))(ctx, param, value)


@weights_group.command("convert", short_help="Convert .npy, .npz or .caffemodel weights to .npz.",
                       epilog=examples.epilog("weights convert"))
@click.argument("source", type=PathParam(weights=True))  # a folder: "is a folder, not a weights file", status 1 as in info
@click.argument("destination", type=PathParam(as_text=True),  # `out/` keeps its slash: a folder, said so
                callback=_destination_checked)
@click.option("--class-names", type=PathParam(exists=True, dir_okay=False), help="Text file, one class name per line, stored with the weights.")
@click.option("--rename", "renames", multiple=True, metavar="NAME=LAYER",
              callback=_refused_as_usage(lambda pairs: _weights("tools").parse_renames(pairs)),
              help="A .caffemodel layer stored under another name, e.g. fc8_flickr=fc8 (repeatable). A single "
                   "renamed layer is found without it.")
@click.option("--force", is_flag=True, help="Replace DESTINATION if it exists.")
@fail_cleanly
@terminating_cleanly()
def weights_convert(source, destination, class_names, renames, force):
    """Convert SOURCE (.npy pickle, .npz or Caffe .caffemodel) to DESTINATION.npz (pickle-free, fast to load)."""
    from alexft.weights.sources import remember_conversion
    from alexft.weights.tools import convert, parse_renames

    destination = Path(destination)
    weight_set = convert(source, destination, class_names=class_names or None, renames=parse_renames(renames),
                         force=force)
    try:
        remember_conversion(source, destination)  # hashes both files: a second or so after the file is in place
    except KeyboardInterrupt as stop:  # the conversion is whole, and said so; the stop ends the command after
        click.echo(f"alexft: the stop came after {destination} was written whole; only its origin, which weights "
                   "info shows, was not recorded", err=True)  # its line (a shell's loop of conversions then stops)
        if not interrupts.pending():  # (a signal's handler has noted it already)
            interrupts.note(getattr(stop, "signal_number", signal.SIGINT))
    click.echo(f"{destination}: {weight_set.num_classes} classes, from {source}")
