"""Activations of a layer for many images' views, computed in batches.

Serves the feature cache of fine-tuning (the frozen part runs once per view) and feature
extraction. Decoding overlaps with compute as in `predict`.
"""
import numpy as np
import tensorflow as tf

from . import architecture as arch
from .pipeline import chunks, map_ahead
from .errors import ImageError
from .preprocess import read_image, resize_and_subtract_mean, ten_crops
from .progress import progress_bar

VIEWS = 10  # Caffe's ten crops; view 4 is the centre crop


def view_features(prefix, paths, ledger, batch_size=32, memory_budget=2 << 30, spill_path=None, progress=None, desc="features"):
    """Run `prefix` (a model ending at the cached layer) on the ten views of every image.

    Returns (features, kept): features is (len(kept), 10, *feature_shape) float32 in memory,
    or a disk-backed memmap at `spill_path` (.npy) when it would exceed `memory_budget` bytes; kept
    are the indices of the readable paths (the others are recorded in `ledger`).
    """
    spec = tf.TensorSpec([None, arch.INPUT_SIZE, arch.INPUT_SIZE, 3], tf.float32)
    run = tf.function(lambda views: prefix(views, training=False), input_signature=[spec])
    feature_shape = tuple(prefix.output.shape[1:])
    features = _allocate((len(paths), VIEWS) + feature_shape, memory_budget, spill_path)
    kept = []
    loaded = map_ahead(lambda index: (index, _views_or_none(paths[index], ledger)), range(len(paths)), None, 2 * batch_size)
    with progress_bar(len(paths), progress, unit="img", desc=desc) as bar:
        for chunk in chunks(loaded, batch_size):
            good = [(index, views) for index, views in chunk if views is not None]
            if good:
                output = run(np.concatenate([views for _, views in good])).numpy()
                output = output.reshape((len(good), VIEWS) + feature_shape)
                for row, (index, _) in enumerate(good):
                    features[len(kept)] = output[row]
                    kept.append(index)
            bar.update(len(chunk))
    return features[: len(kept)], np.array(kept, int)


def _views_or_none(path, ledger):
    try:
        return ten_crops(resize_and_subtract_mean(read_image(path)))
    except ImageError as error:
        ledger.add(path, str(error))
        return None


def _allocate(shape, memory_budget, spill_path):
    size = int(np.prod(shape)) * 4
    if size <= memory_budget or spill_path is None:
        return np.empty(shape, np.float32)
    spill_path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(spill_path, mode="w+", dtype=np.float32, shape=shape)


def centre_view(features):
    """The centre crop's features (view 4 of Caffe's ten)."""
    return features[:, 4]

