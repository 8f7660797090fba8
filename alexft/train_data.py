"""What a fine-tuning run feeds the network: cached features of the frozen part, or images.

Every epoch's order and views are a pure function of (seed, epoch) (`epoch_plan`), so a
resumed run, and a run after a learning-rate range test, sees exactly what an uninterrupted
one would.
"""
import math
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from . import weights as weights_io
from .data import DataError, load_prepared
from .feature_store import FeatureStore
from .features import VIEWS, view_features
from .model import build_alexnet, truncated
from .pipeline import map_ahead
from .preprocess import CROP, RESIZE, TEN_CROP_OFFSETS
from .train_options import cache_point


def epoch_plan(count, seed, epoch):
    """The epoch's image order and, for cached training, each image's view (0-9)."""
    rng = np.random.default_rng([seed, epoch, 0xA1E7])
    return rng.permutation(count).astype(np.int64), rng.integers(0, VIEWS, count).astype(np.int32)


class TrainingData:
    """Batches for training and validation, on one device, several, or several workers."""

    def __init__(self, dataset, options, strategy, ledger, run, chief=True, multiworker=False):
        self.dataset, self.options, self.strategy, self.ledger = dataset, options, strategy, ledger
        self.run, self.chief, self.multiworker = run, chief, multiworker
        self.cache_after = cache_point(options)
        self.train_count = len(dataset.train)

    @property
    def batches_per_epoch(self):
        return math.ceil(self.train_count / self.options.batch_size)

    def prepare(self, model, policy, class_count, cache_memory, progress, log):
        """Compute the feature cache where it applies, reading what the feature store holds;
        count the usable training images."""
        train, val = self.dataset.train, self.dataset.val
        if self.cache_after:
            prefix = truncated(_float32_model(model, policy, class_count), self.cache_after)
            store = FeatureStore.for_prefix(prefix, self.cache_after, say=log if self.chief else None)
            if store is not None:
                store.fits(len(train) + len(val))
            # Under multi-worker training every worker caches every image: each step's slices
            # come from the whole set. Only the chief may spill into the run folder.
            spill = self.run / "feature_cache" if self.chief else Path(self._scratch().name)
            try:
                self.train_features, kept = view_features(
                    prefix, train.paths, self.ledger, memory_budget=cache_memory, spill_path=spill / "train.npy",
                    progress=progress, desc="caching train features", store=store)
                self.train_labels = train.labels[kept]
                self.val_features, kept = view_features(
                    prefix, val.paths, self.ledger, memory_budget=cache_memory, spill_path=spill / "val.npy",
                    progress=progress, desc="caching val features", store=store)
                self.val_labels = val.labels[kept]
            except KeyboardInterrupt:
                if store is not None and store.written and self.chief:
                    log(f"feature store: the {store.written:,} images' features computed before the interruption "
                        f"are kept for the next run ({store.root})")
                raise
            if store is not None and store.written:  # reading never grows the store
                store.trim()
            self.ledger.check(len(train) + len(val))
            self.train_count = len(self.train_labels)
            if store is not None and self.chief:
                log(store.describe())
        if self.train_count == 0:
            raise DataError("no usable training images")
        self.check_every_class_is_trained()

    def usable_labels(self, split):
        """The labels of `split`'s ("train" or "val") images that could be read so far: the
        feature cache's, else the listed ones less the broken files found by now."""
        if self.cache_after:
            return self.train_labels if split == "train" else self.val_labels
        files = self.dataset.train if split == "train" else self.dataset.val
        broken = self.ledger.errors
        return files.labels[[str(path) not in broken for path in files.paths]] if broken else files.labels

    def check_every_class_is_trained(self):
        """A class all of whose training images are broken would be an output the model never
        learned, yet ships: refused, naming it (the images are in broken_files.json). Not when
        several workers train on the images: each reads, and records as broken, only its share."""
        untrained = self._unread_classes("train")
        if untrained:
            raise DataError(f"none of the training images of class {unread_classes_said(untrained)} could be read (the "
                            "skipped lines above name them): the model would have an output it never learned; fix or "
                            "remove them")

    def unread_validation_classes(self):
        """The classes whose every validation image is broken: listed, so not said at the start,
        yet never measured (uncached: known once the first validation has read them)."""
        return self._unread_classes("val")

    def _unread_classes(self, split):
        """[(class name, images listed)] of `split`'s classes none of whose images could be read.
        None known when several workers read the images: each records only its share as broken."""
        if self.multiworker and not self.cache_after:
            return []
        names = self.dataset.class_names
        listed = np.bincount((self.dataset.train if split == "train" else self.dataset.val).labels, minlength=len(names))
        read = np.bincount(self.usable_labels(split), minlength=len(names))
        return [(names[label], int(listed[label])) for label in np.flatnonzero((read == 0) & (listed > 0))]

    def _scratch(self):
        if not hasattr(self, "_scratch_folder"):
            self._scratch_folder = tempfile.TemporaryDirectory(prefix="alexft-worker-cache-")
        return self._scratch_folder

    def train_batches(self, epoch, skip_batches=0):
        order, views = epoch_plan(self.train_count, self.options.seed, epoch)
        batch_size = self.options.batch_size
        if self.multiworker:
            return self._worker_batches(order, views, epoch, skip_batches)
        if self.cache_after:
            features, labels = self.train_features, self.train_labels

            def gather(indices, chosen):
                return np.ascontiguousarray(features[indices, chosen]), labels[indices]

            if self.strategy.num_replicas_in_sync == 1:
                # An epoch on cached features takes milliseconds; building a tf.data pipeline
                # for it took longer than the training itself.
                return _numpy_batches(gather, order, views, batch_size, skip_batches)
            data = tf.data.Dataset.from_tensor_slices((order, views)).batch(batch_size).skip(skip_batches)
            data = data.map(lambda i, v: _numpy_map(gather, (i, v), (tf.float32, tf.int32), features.shape[2:]))
        else:
            data = image_pipeline(self.dataset.train, order, epoch, batch_size, self.options.seed, self.ledger).skip(skip_batches)
        return self.strategy.experimental_distribute_dataset(data.prefetch(tf.data.AUTOTUNE))

    def _worker_batches(self, order, views, epoch, skip_batches):
        """Multi-worker batches: each replica reads only its slice of every global batch.

        The slices (np.array_split: sizes differ by at most one, and may be empty) of one
        step together are exactly the single-process batch, so the all-reduced gradient is
        the same. The next batches' images are decoded while this one trains.
        """
        strategy, batch_size = self.strategy, self.options.batch_size
        replicas = strategy.num_replicas_in_sync
        mine = [int(i) for i in strategy.experimental_local_results(
            strategy.experimental_distribute_values_from_function(lambda context: context.replica_id_in_sync_group))]

        def local_slices(start):
            parts = np.array_split(np.arange(start, min(start + batch_size, len(order))), replicas)
            return {replica: self._replica_batch(order[parts[replica]], views[parts[replica]], epoch) for replica in mine}

        starts = range(skip_batches * batch_size, len(order), batch_size)
        for prepared in map_ahead(local_slices, starts, workers=1, ahead=2):
            yield strategy.experimental_distribute_values_from_function(
                lambda context, prepared=prepared: prepared[context.replica_id_in_sync_group])

    def _replica_batch(self, indices, views, epoch):
        """(images or cached features, labels) for one replica's images, as tensors."""
        if self.cache_after:
            features = np.ascontiguousarray(self.train_features[indices, views])
            return tf.constant(features), tf.constant(self.train_labels[indices], tf.int32)
        train, seed = self.dataset.train, self.options.seed
        crops, labels = [], []
        for index in indices:
            image = load_prepared(train.paths[index], self.ledger)
            if image is not None:
                crops.append(_random_view(tf.constant(image), index, seed, epoch))
                labels.append(train.labels[index])
        images = tf.stack(crops) if crops else tf.zeros([0, CROP, CROP, 3])
        return images, tf.constant(np.array(labels, np.int32))

    def val_batches(self):
        ten_crop, batch_size = self.options.ten_crop_val, self.options.batch_size
        if self.cache_after:
            features = self.val_features if ten_crop else self.val_features[:, 4:5]
            return tf.data.Dataset.from_tensor_slices((features, self.val_labels)).batch(batch_size)
        order = np.arange(len(self.dataset.val))
        return image_pipeline(self.dataset.val, order, 0, batch_size, self.options.seed, self.ledger,
                              augment=False, ten_crop=ten_crop)


def image_pipeline(split, order, epoch, batch_size, seed, ledger, augment=True, ten_crop=False):
    """A tf.data pipeline of (views, labels) batches decoded from `split`'s files in `order`;
    broken files are recorded in `ledger` and left out."""
    paths, labels = split.paths, split.labels

    def load(index):
        image = load_prepared(paths[index], ledger)
        ok = image is not None
        return (image if ok else np.zeros((RESIZE, RESIZE, 3), np.float32)), labels[index], ok

    data = tf.data.Dataset.from_tensor_slices(order)
    data = data.map(lambda i: (i,) + tuple(_numpy_map(load, (i,), (tf.float32, tf.int32, tf.bool), (RESIZE, RESIZE, 3), batched=False)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    data = data.filter(lambda i, image, label, ok: ok)
    if augment:
        data = data.map(lambda i, image, label, ok: (_random_view(image, i, seed, epoch), label))
    else:
        data = data.map(lambda i, image, label, ok: (_fixed_views(image, ten_crop), label))
    return data.batch(batch_size)


def _float32_model(model, policy, class_count):
    """The model itself, or under mixed precision a float32 copy: the cache is computed
    once, so 16-bit compute would save little there and cost every epoch accuracy."""
    if policy == "float32":
        return model
    copy = build_alexnet(class_count)
    weights_io.assign(copy, weights_io.from_model(model))
    return copy


def _numpy_batches(gather, order, views, batch_size, skip_batches):
    """The cached path's batches as tensors, straight from the feature arrays."""
    for start in range(skip_batches * batch_size, len(order), batch_size):
        images, labels = gather(order[start : start + batch_size], views[start : start + batch_size])
        yield tf.convert_to_tensor(images), tf.convert_to_tensor(labels, tf.int32)


def _numpy_map(function, args, dtypes, shape, batched=True):
    outputs = tf.numpy_function(function, list(args), list(dtypes))
    outputs[0].set_shape(([None] if batched else []) + list(shape))
    for extra in outputs[1:]:
        extra.set_shape([None] if batched else [])
    return outputs


def _random_view(image, index, seed, epoch):
    """Caffe's training augmentation: a random 227 crop of the 256 image and a random mirror,
    drawn from stateless RNG keyed by (image, seed, epoch) so that runs are reproducible."""
    key = tf.stack([tf.cast(index, tf.int64), tf.constant(seed * 100_003 + epoch, tf.int64)])
    offsets = tf.random.stateless_uniform([2], key, minval=0, maxval=RESIZE - CROP + 1, dtype=tf.int32)
    crop = tf.slice(image, [offsets[0], offsets[1], 0], [CROP, CROP, 3])
    mirror = tf.random.stateless_uniform([], key + 1) < 0.5
    return tf.cond(mirror, lambda: tf.reverse(crop, [1]), lambda: crop)


def _fixed_views(image, ten_crop):
    crops = [image[top:top + CROP, left:left + CROP] for top, left in TEN_CROP_OFFSETS]
    if not ten_crop:
        return tf.stack(crops[4:5])
    crops = tf.stack(crops)
    return tf.concat([crops, tf.reverse(crops, [2])], 0)


def unread_classes_said(unread, shown=5):
    """"'a' (3 listed), 'b' (5 listed) and 2 more" of _unread_classes' list, for one line."""
    said = ", ".join(f"{name!r} ({count:,} listed)" for name, count in unread[:shown])
    return said + (f" and {len(unread) - shown} more" if len(unread) > shown else "")
