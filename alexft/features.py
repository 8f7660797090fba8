"""Activations of a layer for many images' views, computed in batches.

Serves the feature cache of fine-tuning (the frozen part runs once per view) and feature
extraction. Decoding overlaps with compute as in `predict`.
"""
import contextlib
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from .atomic import missing_folders, remove_empty
from .feature_files import TenCropOfMapsError, check_output, disk_array, write_npz
from .feature_store import HashedFile, add_weights, file_digest
from .pipeline import check_count, check_flags, chunks, map_ahead
from .errors import ImageError
from .data import DataError, images_with_labels  # (images_with_labels also re-exported)
from .model import InferenceFunction, fused_lrn_pays_off, truncated
from .preprocess import Preprocessing, image_views, path_list, warn_user
from .progress import progress_bar
from .python_words import keywords_hinted

VIEWS = 10  # Caffe's ten crops; view 4 is the centre crop


def layer_outputs(prefix, paths, ten_crop, on_error, batch_size=32, progress=None, desc="features",
                  preprocessing=None):
    """Yield (index, outputs) for every readable path, in order: `prefix`'s activations for
    the image's views, shaped (1 or 10, ...). Unreadable files go to on_error(path, message).

    Images are decoded on a thread pool ahead of the network; all views of a batch of images
    go through it as one batch.
    """
    run = InferenceFunction(prefix)
    shape = tuple(prefix.output.shape[1:])
    views_per_image = VIEWS if ten_crop else 1
    fused_lrn = fused_lrn_pays_off(len(paths) * views_per_image)  # then only on full batches

    def load(index):
        try:
            return index, image_views(paths[index], ten_crop, preprocessing)
        except ImageError as error:
            return index, str(error)

    with progress_bar(len(paths), progress, minimum=8, unit="img", desc=desc) as bar:
        for chunk in chunks(map_ahead(load, range(len(paths)), None, 2 * batch_size), batch_size):
            for index, views in chunk:  # said here, in the inputs' order, not from the decoding threads
                if isinstance(views, str):
                    on_error(paths[index], views)
            good = [(index, views) for index, views in chunk if not isinstance(views, str)]
            if good:
                full = len(good) == batch_size
                values = run(np.concatenate([views for _, views in good]), fused_lrn and full).numpy()
                values = values.astype(np.float32, copy=False)  # a bfloat16 model's activations, widened
                yield from zip((index for index, _ in good), values.reshape((len(good), views_per_image) + shape))
            bar.update(len(chunk))


def view_features(prefix, paths, ledger, batch_size=32, memory_budget=2 << 30, spill_path=None, progress=None,
                  desc="features", store=None):
    """Run `prefix` (a model ending at the cached layer) on the ten views of every image.

    Returns (features, kept): features is (len(kept), 10, *feature_shape) float32 in memory,
    or a disk-backed memmap at `spill_path` (.npy) when it would exceed `memory_budget` bytes;
    kept are the indices of the readable paths (the others are recorded in `ledger`).
    `store`: a FeatureStore; images found there are not computed, the others are added to it
    as they are computed (so an interrupted run loses nothing it had computed).
    """
    features = _allocate((len(paths), VIEWS) + tuple(prefix.output.shape[1:]), memory_budget, spill_path)
    done = np.zeros(len(paths), bool)
    if store is not None:
        _read_stored(store, paths, features, done, progress)
    missing = np.flatnonzero(~done)
    if len(missing) < len(paths):  # the bar counts only the images computed: it says where the rest came from
        desc = f"{desc} ({len(paths) - len(missing):,} of {len(paths):,} stored)"  # (short: a bar's label shares its line)
    sources = [HashedFile(paths[i]) if store is not None else paths[i] for i in missing]
    computed = layer_outputs(prefix, sources, True, ledger.add, batch_size, progress, desc) if sources else ()
    for position, outputs in computed:
        ledger.check()  # too many broken files stop the run now, not after hours of caching the rest
        if store is not None:
            outputs = store.save(sources[position].digest, outputs)
        features[missing[position]], done[missing[position]] = outputs, True
    kept = np.flatnonzero(done)
    for row, index in enumerate(kept):  # close the broken files' gaps, in place: row <= index
        if row != index:
            features[row] = features[index]
    return features[: len(kept)], kept


def _read_stored(store, paths, features, done, progress):
    """Fill the `features` rows `store` holds, marking them in `done`."""
    if not store.folder.is_dir():  # nothing stored for these weights yet: no file is read twice
        return
    def look_up(index):
        digest = file_digest(paths[index])
        return index, digest, digest and store.load(digest)

    with progress_bar(len(paths), progress, minimum=64, unit="img", desc="looking in the feature store") as bar:
        for index, digest, value in map_ahead(look_up, range(len(paths)), None, 64):
            if value is not None:
                features[index], done[index] = value, True
                store.note_read(digest)
            bar.update(1)


def _allocate(shape, memory_budget, spill_path):
    size = int(np.prod(shape)) * 4
    if size <= memory_budget or spill_path is None:
        return np.empty(shape, np.float32)
    spill_path.parent.mkdir(parents=True, exist_ok=True)
    return disk_array(spill_path, shape, spill_path)


def _keras_model(model, preprocessing):
    """The Keras model of a Predictor (with its preprocessing, unless one is given), or `model` itself."""
    if hasattr(model, "get_layer"):
        return model, preprocessing
    if hasattr(model, "model") and hasattr(model.model, "get_layer"):
        return model.model, preprocessing if preprocessing is not None else model.preprocessing
    from .predict import not_a_predictor

    raise TypeError(not_a_predictor(model))


@keywords_hinted
def extract_features(model, paths, layer, output, ten_crop=False, labels=None, class_names=None,
                     batch_size=32, progress=None, preprocessing=None, overwrite=True, say=warn_user, on_skip=None):
    """Write `layer`'s activations for every readable image to `output` (.npz), streaming.
    `model`: a Predictor (`load_predictor`; its preprocessing is used) or its Keras model.
    `paths`: images or folders; one folder laid out as <class>/<images> gives the labels and
    class names, as `alexft features` does. Or `labels`: one class index per image file, and
    optionally the `class_names` they index (checked before any work).

    The file holds `features` (n, ...) float32 (the mean over the ten crops with `ten_crop`,
    for fc6-fc8 only: the crops' maps do not line up), `paths`, `recipe` (JSON: the layer, the
    crops, a digest of the weights up to `layer`, the preprocessing and precision, so that `merge_features`
    never joins shards made differently), and for labelled data `labels` and `class_names`. Activations go to a
    memory-mapped file as they are computed, so memory stays flat for large folders.
    Returns (number written, {path: error} for the skipped files). When no input could be
    used, nothing is written (an earlier `output` stays as it was); folders without images are a
    DataError, as on the command line. An empty list of paths (a shard with nothing to do)
    writes a file of no features, which joins the other shards' files as they are. `output` must end in .npz;
    an existing one is replaced only if it is a feature file, and with `overwrite` (as Keras'
    `save`): a photo or a weights file named by mistake is refused before any work, and folders
    made for it are removed again when nothing is written. `say`: told what was left out (default:
    an AlexftWarning). `on_skip(message)`: told of each unusable file as it is met (a long run, or
    one interrupted, names them before its end).
    """
    check_count(batch_size, "batch_size")
    check_flags(ten_crop=ten_crop, overwrite=overwrite)
    check_output(output, overwrite)
    model, preprocessing = _keras_model(model, preprocessing)
    paths = path_list(paths)
    if labels is None:  # folders expand as on the command line; one laid out <class>/<images> gives labels
        paths, labels, class_names = _images_found(paths, say)
    else:
        paths, labels = _each_labelled_image_once(paths, _labels_given(paths, labels, class_names), say)
    prefix = truncated(model, layer)
    if ten_crop and len(prefix.output.shape) > 2:
        raise TenCropOfMapsError(layer, "ten_crop=True")
    recipe = feature_recipe(prefix, layer, ten_crop, preprocessing)
    output = Path(output)
    kept, skipped = [], {}

    def skip(path, message):
        skipped[str(path)] = message
        if on_skip is not None:
            on_skip(message)

    with _folders_made_for(output), tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        features = disk_array(Path(scratch) / "features.npy", (len(paths),) + tuple(prefix.output.shape[1:]), output)
        for index, outputs in layer_outputs(prefix, paths, ten_crop, skip, batch_size, progress, f"{layer} features",
                                            preprocessing):
            features[len(kept)] = outputs.mean(axis=0)
            kept.append(index)
        features.flush()
        if skipped and not kept:  # a file of no features would look like a result, or replace one
            first = next(iter(skipped.values()))
            say(f"no features written to {output}: " + (f"none of the {len(skipped)} images could be used (e.g. {first})"
                                                        if len(skipped) > 1 else f"its one image could not be used ({first})"))
            return 0, skipped
        extras = {"paths": np.array([str(paths[i]) for i in kept], dtype=str), "recipe": np.array(json.dumps(recipe))}
        if labels is not None:
            extras["labels"] = np.asarray(labels)[kept].astype(np.int32)
            if class_names is not None:
                extras["class_names"] = np.array(class_names, dtype=str)
        write_npz(output, Path(scratch) / "features.npy", len(kept), extras)
    if skipped:  # (said when nothing was written only, a user found the file one image short)
        they = "it is" if len(skipped) == 1 else "they are"
        say(f"{len(skipped)} of {len(paths)} images could not be used; {they} not in {output} (e.g. "
            f"{next(iter(skipped.values()))})")
    return len(kept), skipped


def _labels_given(paths, labels, class_names):
    """Labels passed by the caller, checked before any work: one whole number per image file
    (a folder cannot take one label), each naming one of `class_names` when they are given."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(paths):
        raise ValueError(f"labels: {labels.size} given for {len(paths)} path(s); give one per image")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be whole numbers (class indices); got {labels.dtype} values such as "
                        f"{labels.flat[0].item()!r}")
    folders = [str(path) for path in paths if isinstance(path, Path) and path.is_dir()]
    if folders:
        raise ValueError(f"{folders[0]}: is a folder; with labels, give one image file per label (or leave labels "
                         "out: a folder laid out as <class>/<images> gives its own)")
    if class_names is not None and labels.size and not 0 <= labels.min() <= labels.max() < len(class_names):
        outside = labels[(labels < 0) | (labels >= len(class_names))][0]
        raise ValueError(f"labels: {outside} names no class; class_names holds {len(class_names)} (0 to "
                         f"{len(class_names) - 1})")
    return labels


def _each_labelled_image_once(paths, labels, say):
    """An image named twice is read once, as without labels (its rows had been written twice, and
    the row count depended on whether labels were given); under two labels it is a mistake."""
    from .preprocess import file_identity, say_left_out, without_repeats

    first = {}
    for path, label in zip(paths, labels.tolist()):
        identity = file_identity(path)
        if identity is not None and first.setdefault(identity, label) != label:
            raise ValueError(f"{path}: given twice, with labels {first[identity]} and {label}; one image takes one label")
    kept, repeated = without_repeats([(index, file_identity(path)) for index, path in enumerate(paths)])
    say_left_out([f"{paths[index]}, named again" for index in repeated], say)
    kept = [index for index, _ in kept]
    return [paths[index] for index in kept], labels[kept]


def feature_recipe(prefix, layer, ten_crop, preprocessing=None):
    """How features are made, as plain values: two files agree on it only if their features can
    stand side by side. The weights are named by a digest of the arrays of `prefix`, the network
    up to `layer` (as the feature store names them): the layers above change no feature, so a
    file without them (fc7's, without fc8) agrees with the full file it came from."""
    preprocessing = preprocessing or Preprocessing()
    weights = add_weights(hashlib.sha256(), prefix.weights)
    mean = ("the mean pixel" if preprocessing.mean is None
            else "a mean image, SHA-256 " + hashlib.sha256(np.ascontiguousarray(preprocessing.mean).tobytes()).hexdigest())
    return {"layer": layer, "ten_crop": bool(ten_crop), "weights_sha256": weights.hexdigest(), "mean": mean,
            "float_resize": bool(preprocessing.float_resize), "precision": prefix.get_layer(layer).compute_dtype}


@contextlib.contextmanager
def _folders_made_for(output):
    """Makes `output`'s missing folders; those still empty after the block (nothing written:
    no input could be used, a Ctrl-C) are removed, so no trace of a failed run stays."""
    made = missing_folders(output.parent)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        remove_empty(made)  # (one holding the result stays, and those above it)


def _images_found(inputs, say):
    """`images_with_labels`, warning of folders without images among others, and raising
    DataError when the inputs named hold no image at all (writing a file of none would look
    like a result)."""
    said = []
    paths, labels, class_names = images_with_labels(inputs, say=said.append)
    if inputs and not paths:
        raise DataError("; ".join(said) if said else f"no images found in {', '.join(map(str, inputs))}")
    for message in said:
        say(message)
    return paths, labels, class_names
