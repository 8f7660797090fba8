"""Activations of a layer for many images' views, computed in batches.

Serves the feature cache of fine-tuning (the frozen part runs once per view) and feature
extraction. Decoding overlaps with compute as in `predict`.
"""
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .pipeline import chunks, map_ahead
from .errors import ImageError
from .data import class_folders, list_labelled
from .model import InferenceFunction, fused_lrn_pays_off, truncated
from .preprocess import find_images, image_views
from .progress import progress_bar

VIEWS = 10  # Caffe's ten crops; view 4 is the centre crop


def layer_outputs(prefix, paths, ten_crop, on_error, batch_size=32, progress=None, desc="features"):
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
            return index, image_views(paths[index], ten_crop)
        except ImageError as error:
            on_error(paths[index], str(error))
            return index, None

    with progress_bar(len(paths), progress, minimum=8, unit="img", desc=desc) as bar:
        for chunk in chunks(map_ahead(load, range(len(paths)), None, 2 * batch_size), batch_size):
            good = [(index, views) for index, views in chunk if views is not None]
            if good:
                full = len(good) == batch_size
                values = run(np.concatenate([views for _, views in good]), fused_lrn and full).numpy()
                yield from zip((index for index, _ in good), values.reshape((len(good), views_per_image) + shape))
            bar.update(len(chunk))


def view_features(prefix, paths, ledger, batch_size=32, memory_budget=2 << 30, spill_path=None, progress=None,
                  desc="features"):
    """Run `prefix` (a model ending at the cached layer) on the ten views of every image.

    Returns (features, kept): features is (len(kept), 10, *feature_shape) float32 in memory,
    or a disk-backed memmap at `spill_path` (.npy) when it would exceed `memory_budget` bytes;
    kept are the indices of the readable paths (the others are recorded in `ledger`).
    """
    features = _allocate((len(paths), VIEWS) + tuple(prefix.output.shape[1:]), memory_budget, spill_path)
    kept = []
    for index, outputs in layer_outputs(prefix, paths, True, ledger.add, batch_size, progress, desc):
        features[len(kept)] = outputs
        kept.append(index)
    return features[: len(kept)], np.array(kept, int)


def _allocate(shape, memory_budget, spill_path):
    size = int(np.prod(shape)) * 4
    if size <= memory_budget or spill_path is None:
        return np.empty(shape, np.float32)
    spill_path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(spill_path, mode="w+", dtype=np.float32, shape=shape)


def images_with_labels(inputs):
    """(paths, labels, class_names) for image files or folders; labels and class names are
    None unless `inputs` is one folder laid out as <class>/<images>."""
    inputs = [Path(item) for item in inputs]
    if len(inputs) == 1 and inputs[0].is_dir() and class_folders(inputs[0]):
        class_names = class_folders(inputs[0])
        files = list_labelled(inputs[0], class_names)
        return files.paths, files.labels, class_names
    return find_images(inputs), None, None


def extract_features(model, paths, layer, output, ten_crop=False, labels=None, class_names=None,
                     batch_size=32, progress=None):
    """Write `layer`'s activations for every readable image to `output` (.npz), streaming.

    The file holds `features` (n, ...) float32 (the mean over the ten crops with `ten_crop`),
    `paths`, and for labelled data `labels` and `class_names`. Activations go to a
    memory-mapped file as they are computed, so memory stays flat for large folders.
    Returns (number written, {path: error} for the skipped files).
    """
    prefix = truncated(model, layer)
    output = Path(output)
    kept, skipped = [], {}

    def skip(path, message):
        skipped[str(path)] = message

    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        features = np.lib.format.open_memmap(Path(scratch) / "features.npy", mode="w+", dtype=np.float32,
                                             shape=(len(paths),) + tuple(prefix.output.shape[1:]))
        for index, outputs in layer_outputs(prefix, paths, ten_crop, skip, batch_size, progress, f"{layer} features"):
            features[len(kept)] = outputs.mean(axis=0)
            kept.append(index)
        features.flush()
        extras = {"paths": np.array([str(paths[i]) for i in kept], dtype=str)}
        if labels is not None:
            extras["labels"] = np.asarray(labels)[kept].astype(np.int32)
            extras["class_names"] = np.array(class_names, dtype=str)
        _write_npz(output, Path(scratch) / "features.npy", len(kept), extras)
    return len(kept), skipped


def merge_features(parts, output):
    """Concatenate feature files written by `features --shard I/N`, in the order given, into
    `output`: the same file one unsharded run writes. Reads one part at a time."""
    parts = [Path(part) for part in parts]
    if not parts:
        raise ValueError("merge_features: no parts given")
    shapes, extras, members = [], {}, None
    for part in parts:
        with np.load(part, allow_pickle=False) as stored:
            if members is not None and sorted(stored.files) != members:
                raise ValueError(f"merge_features: {part} holds {sorted(stored.files)}, the first part {members}")
            members = sorted(stored.files)
            shapes.append(_features_shape(part))  # from the header: the array is read once, below
            for name in stored.files:
                if name == "class_names":
                    if name in extras and not np.array_equal(extras[name][0], stored[name]):
                        raise ValueError(f"merge_features: {part} has other class names than the first part")
                    extras.setdefault(name, [stored[name]])
                elif name != "features":
                    extras.setdefault(name, []).append(stored[name])
    if len({shape[1:] for shape in shapes}) != 1:
        raise ValueError(f"merge_features: the parts hold features of different shapes {sorted(set(shapes))}")
    output = Path(output)
    total = sum(shape[0] for shape in shapes)
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        merged = np.lib.format.open_memmap(Path(scratch) / "features.npy", mode="w+", dtype=np.float32,
                                           shape=(total,) + shapes[0][1:])
        start = 0
        for part, shape in zip(parts, shapes):
            with np.load(part, allow_pickle=False) as stored:
                merged[start:start + shape[0]] = stored["features"]
            start += shape[0]
        merged.flush()
        _write_npz(output, Path(scratch) / "features.npy", total, {name: np.concatenate(arrays) for name, arrays in extras.items()})
    return output


def _features_shape(part):
    """The shape of a feature file's `features`, from its .npy header alone."""
    with zipfile.ZipFile(part) as archive, archive.open("features.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_2_0 if version == (2, 0) else np.lib.format.read_array_header_1_0
        return read_header(member)[0]


def _write_npz(output, features_file, count, extras):
    """An .npz (uncompressed zip of .npy files) whose big member is copied from disk in pieces."""
    source = np.load(features_file, mmap_mode="r")[:count]

    def write(handle):
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("features.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, np.lib.format.header_data_from_array_1_0(source))
                for start in range(0, count, 1024):
                    member.write(np.ascontiguousarray(source[start:start + 1024]).tobytes())
            for name, array in extras.items():
                with archive.open(f"{name}.npy", "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    write_atomic(output, write)
