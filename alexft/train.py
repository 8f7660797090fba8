"""Fine-tuning: frozen prefix, optional feature cache, the loop, checkpoints and resume.

Defaults follow Caffe's fine-tuning recipe for bvlc_alexnet: SGD with momentum 0.9, weight
decay 5e-4 on kernels (none on biases), biases at 2x the learning rate, freshly initialised
layers at 10x, base rate 0.001 cut to a tenth for the last third of the epochs.
"""
import csv
import datetime
import hashlib
import io
import json
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from . import architecture as arch
from . import checkpoint as checkpoints
from . import sgd
from . import weights as weights_io
from . import winograd
from .atomic import remove_stale_temporaries, write_text
from .data import BrokenFiles, DataError, load_dataset, load_prepared
from .devices import cluster_role, make_strategy, precision_policy, uses_gpu
from .errors import AlexftError
from .features import VIEWS, view_features
from .model import build_alexnet, head, truncated
from .pipeline import map_ahead
from .plots import learning_curves
from .preprocess import CROP, RESIZE, TEN_CROP_OFFSETS
from .progress import progress_bar
from .sgd import CaffeSGD, caffe_parameters
from .sources import resolve_weights

# Options that must match when a run is resumed (epochs may grow; devices may change).
IDENTITY = ("skip", "train", "batch_size", "lr", "momentum", "weight_decay", "fresh_lr_multiplier",
            "bias_lr_multiplier", "dropout", "seed", "cache", "val_split", "class_names", "base_weights_sha256")
CACHE_POINTS = {"fc6": "pool5", "fc7": "fc6", "fc8": "fc7"}  # first trained layer -> cached output
CURVES_EVERY = 30  # seconds between redraws of curves.png during a run
# What a collective op raises on the surviving workers when another worker is gone.
LOST_WORKER = (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


class TrainingError(AlexftError, RuntimeError):
    """Training cannot go on (diverged, interrupted, or an option conflict)."""


class TrainingInterrupted(TrainingError):
    def __init__(self, message, signal_number):
        super().__init__(message)
        self.signal_number = signal_number


def finetune(data_dir, weights=None, skip=("fc8",), train=None, epochs=10, batch_size=64, lr=0.001,
             val_dir=None, val_split=0.1, ten_crop_val=False, output=None, resume=False, seed=0,
             device="auto", strategy="auto", mixed_precision=None, cache=True, momentum=0.9,
             weight_decay=sgd.WEIGHT_DECAY, fresh_lr_multiplier=sgd.FRESH_LR_MULTIPLIER,
             bias_lr_multiplier=sgd.BIAS_LR_MULTIPLIER, dropout=0.5,
             max_broken=0.1, cache_memory=2 << 30, progress=None, log=None):
    """Fine-tune AlexNet on DATA_DIR/<class>/<images>; return a summary dict.

    `skip`: layers not loaded from the weights file (fresh init). `train`: layers that learn,
    "all", or None for the skipped ones. Everything is written to the run folder `output`
    (default runs/<timestamp>); `resume=True` continues the run in `output`.
    `mixed_precision`: None (on for GPUs, off for CPUs), True (float16 on a GPU, bfloat16 on
    a CPU with bfloat16 instructions), False, or "float16" / "bfloat16" to choose the type.
    """
    log = log or (lambda message: print(f"alexft: {message}", file=sys.stderr))
    chief = True
    if strategy == "multiworker":
        chief, task = cluster_role()
        if output is None:
            raise TrainingError("--strategy multiworker needs --output: a run folder every worker can reach (shared storage)")
        if device != "auto":
            raise TrainingError("--device cannot be combined with --strategy multiworker: each worker uses all its local "
                                "devices (choose them with CUDA_VISIBLE_DEVICES on each machine)")
        log(f"multi-worker training as {task}" + (" (chief: writes the run folder)" if chief else ""))
    dataset = load_dataset(data_dir, val_dir=val_dir, val_split=val_split, seed=seed)
    weights_path = resolve_weights(weights, progress=progress)
    weight_set = weights_io.load(weights_path, skip=skip)
    skip, train = _layer_choice(skip, train, weight_set, len(dataset.class_names), log)
    config = dict(
        data_dir=str(data_dir), val_dir=val_dir and str(val_dir), weights=str(weights_path),
        base_weights_sha256=_sha256(weights_path), skip=skip, train=train, epochs=epochs,
        batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
        fresh_lr_multiplier=fresh_lr_multiplier, bias_lr_multiplier=bias_lr_multiplier, dropout=dropout,
        val_split=val_split, ten_crop_val=ten_crop_val, seed=seed, device=device, strategy=strategy,
        mixed_precision=mixed_precision, cache=cache, max_broken=max_broken, class_names=dataset.class_names,
        versions=_versions(),
    )
    run = _prepare_run_folder(output, resume, config, chief)
    try:
        trainer = Trainer(config, dataset, weight_set, run, cache_memory, progress, log, chief)
    except AlexftError:
        if chief and not resume:
            _discard_fresh_run(run)  # a start refused (device, precision...) must not block the next try
        raise
    return trainer.fit()


def _layer_choice(skip, train, weight_set, num_classes, log):
    skip = list(dict.fromkeys(skip or ()))
    if weight_set.num_classes != num_classes and "fc8" not in skip:
        log(f"{num_classes} classes but the weights have {weight_set.num_classes}: fc8 starts fresh")
        skip.append("fc8")
    if train is None:
        train = list(skip)
    elif train == "all" or train == ["all"]:
        train = list(arch.LAYER_NAMES)
    unknown = sorted((set(skip) | set(train)) - set(arch.LAYER_NAMES))
    if unknown:
        raise TrainingError(f"unknown layer(s) {', '.join(unknown)}; AlexNet has {', '.join(arch.LAYER_NAMES)}")
    if not train:
        raise TrainingError("no layer to train: pass --skip fc8 or --train LAYERS")
    frozen_fresh = [name for name in skip if name not in train]
    if frozen_fresh:
        raise TrainingError(f"--skip {','.join(frozen_fresh)} without training it would leave it random: add it to --train")
    order = list(arch.LAYER_NAMES)
    return sorted(skip, key=order.index), sorted(set(train), key=order.index)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _versions():
    import cv2
    import keras

    from . import __version__

    return dict(alexft=__version__, tensorflow=tf.__version__, keras=keras.__version__, numpy=np.__version__,
                opencv=cv2.__version__, python=sys.version.split()[0])


def _prepare_run_folder(output, resume, config, chief=True):
    """The run folder, checked for --resume; only the chief writes to it."""
    run = Path(output) if output else Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    saved = run / "config.json"
    if resume:
        if not saved.is_file():
            raise TrainingError(f"{run}: nothing to resume (no config.json); run without --resume first")
        try:
            earlier = json.loads(saved.read_text())
        except ValueError as error:
            raise TrainingError(f"{saved}: unreadable ({error}); the run cannot be resumed") from None
        _check_same_run(earlier, config, run)
    # A finished epoch leaves a checkpoint, which every worker can see before the cluster forms
    # (the chief's fresh config.json cannot tell them apart): all refuse together, none waits.
    if not resume and (run / "checkpoint.npz").exists():
        raise TrainingError(f"{run}: already holds a run; pass --resume to continue it or choose another --output")
    if not chief:
        return run
    if not resume and saved.exists():
        raise TrainingError(f"{run}: already holds a run; pass --resume to continue it or choose another --output")
    run.mkdir(parents=True, exist_ok=True)
    _write_json(saved, config)
    _write_json(run / "classes.json", config["class_names"])
    return run


def _discard_fresh_run(run):
    """Remove what `_prepare_run_folder` wrote for a run that never started."""
    for name in ("config.json", "classes.json"):
        (run / name).unlink(missing_ok=True)
    try:
        run.rmdir()  # only if nothing else is there
    except OSError:
        pass


def _write_json(path, value):
    write_text(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n", TrainingError)


def _check_same_run(saved, config, run):
    changed = [key for key in IDENTITY if saved.get(key) != config.get(key)]
    if changed:
        details = "; ".join(f"{key}: was {_short(saved.get(key))}, now {_short(config.get(key))}" for key in changed)
        raise TrainingError(f"{run}: cannot resume with a different configuration ({details})")


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def learning_rate(config, epoch):
    """Caffe-style step schedule: the base rate, a tenth of it for the last third of the epochs."""
    return config["lr"] * (0.1 if epoch >= math.ceil(2 * config["epochs"] / 3) and config["epochs"] >= 3 else 1.0)


def epoch_plan(count, seed, epoch):
    """The epoch's image order and, for cached training, each image's view (0-9): a pure
    function of (seed, epoch), so a resumed run sees exactly what an uninterrupted one would."""
    rng = np.random.default_rng([seed, epoch, 0xA1E7])
    return rng.permutation(count).astype(np.int64), rng.integers(0, VIEWS, count).astype(np.int32)


class Trainer:
    """One fine-tuning run: builds the network, feeds it, checkpoints it."""

    def __init__(self, config, dataset, weight_set, run, cache_memory, progress, log, chief=True):
        self.config, self.dataset, self.run, self.progress, self.log = config, dataset, run, progress, log
        self.chief = chief  # only the chief writes the run folder; other workers train alongside
        self.ledger = BrokenFiles(config["max_broken"])
        self.strategy = make_strategy(config["strategy"], config["device"])
        self.multiworker = isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if self.multiworker:
            log(f"{self.strategy.num_replicas_in_sync} replicas in sync across the cluster")
        self.policy = precision_policy(config["mixed_precision"], self.strategy)
        if self.policy != "float32":
            log(f"mixed precision: {self.policy[len('mixed_'):]} compute, float32 weights, loss and softmax")
        self.cache_after = CACHE_POINTS.get(config["train"][0]) if config["cache"] else None
        with self.strategy.scope():
            # On a CPU where it is faster, conv3-conv5 train as Winograd convolutions (float32 only) in
            # runs long enough to repay XLA's compile; GPUs have cuDNN's.
            training_images = len(dataset.train) * config["epochs"]
            fast_convolutions = (not uses_gpu(self.strategy)
                                 and winograd.pays_off(training_images, winograd.cpu_features()))
            self.model = build_alexnet(len(dataset.class_names), seed=config["seed"], dropout=config["dropout"],
                                       dtype=self.policy, winograd_training=fast_convolutions)
            weights_io.assign(self.model, weight_set, skip=config["skip"])
            self.net = head(self.model, self.cache_after) if self.cache_after else self.model
            self._freeze()
            self.optimizer = self._make_optimizer()
            self.optimizer.build(self.variables)
        self.cache_memory = cache_memory
        self.train_step = self._make_train_step()
        self._curves_drawn = -math.inf
        self.evaluate_views = self._make_evaluate()

    # --- set-up ---------------------------------------------------------------------

    def _freeze(self):
        trained = set(self.config["train"])
        for layer in self.model.layers:
            layer.trainable = layer.name in trained
        config = self.config
        self.variables, self.multipliers, self.decays = caffe_parameters(
            self.model, config["train"], skip=config["skip"], weight_decay=config["weight_decay"],
            fresh_lr_multiplier=config["fresh_lr_multiplier"], bias_lr_multiplier=config["bias_lr_multiplier"])

    def _make_optimizer(self):
        import keras

        optimizer = CaffeSGD(self.config["lr"], self.config["momentum"], self.multipliers, self.decays)
        if self.policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    def _make_train_step(self):
        net, variables, optimizer, strategy = self.net, self.variables, self.optimizer, self.strategy

        def replica_step(images, labels):
            context = tf.distribute.get_replica_context()
            count = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(labels)[0], tf.float32))
            count = tf.maximum(count, 1.0)  # a batch whose images were all broken must not divide by zero
            with tf.GradientTape() as tape:
                logits = net(images, training=True)
                losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
                # Weight decay and learning-rate multipliers are the optimizer's (CaffeSGD).
                scaled = optimizer.scale_loss(tf.reduce_sum(losses) / count)
            gradients = tape.gradient(scaled, variables)
            optimizer.apply_gradients(zip(gradients, variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
            return tf.reduce_sum(losses), correct, tf.cast(tf.shape(labels)[0], tf.float32)

        @tf.function(reduce_retracing=True)  # the last batch of an epoch is smaller
        def step(batch):
            results = strategy.run(replica_step, args=batch)
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in results]

        return step

    def _make_evaluate(self):
        net = self.net

        @tf.function
        def evaluate(views, labels):
            """views: (batch, V, ...) -> summed loss and correct count of the V-view average."""
            shape = tf.shape(views)
            flat = tf.reshape(views, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
            probabilities = tf.nn.softmax(net(flat, training=False))
            probabilities = tf.reduce_mean(tf.reshape(probabilities, [shape[0], shape[1], -1]), axis=1)
            picked = tf.gather(probabilities, labels, batch_dims=1)
            loss = -tf.reduce_sum(tf.math.log(tf.maximum(picked, 1e-12)))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), labels), tf.float32))
            return loss, correct

        return evaluate

    # --- data ---------------------------------------------------------------------------

    def _prepare_data(self):
        train, val = self.dataset.train, self.dataset.val
        if self.cache_after:
            prefix = truncated(self._float32_model(), self.cache_after)
            # Under multi-worker training every worker caches every image: each step's slices
            # come from the whole set. Only the chief may spill into the run folder.
            spill = self.run / "feature_cache" if self.chief else Path(self._scratch().name)
            self.train_features, kept = view_features(
                prefix, train.paths, self.ledger, memory_budget=self.cache_memory, spill_path=spill / "train.npy",
                progress=self.progress, desc="caching train features")
            self.train_labels = train.labels[kept]
            self.val_features, kept = view_features(
                prefix, val.paths, self.ledger, memory_budget=self.cache_memory, spill_path=spill / "val.npy",
                progress=self.progress, desc="caching val features")
            self.val_labels = val.labels[kept]
            self.ledger.check(len(train) + len(val))
            self.train_count = len(self.train_labels)
        else:
            self.train_count = len(train)
        if self.train_count == 0:
            raise DataError("no usable training images")

    def _scratch(self):
        if not hasattr(self, "_scratch_folder"):
            self._scratch_folder = tempfile.TemporaryDirectory(prefix="alexft-worker-cache-")
        return self._scratch_folder

    def _float32_model(self):
        """The model itself, or under mixed precision a float32 copy: the cache is computed
        once, so 16-bit compute would save little there and cost every epoch accuracy."""
        if self.policy == "float32":
            return self.model
        copy = build_alexnet(len(self.dataset.class_names))
        weights_io.assign(copy, weights_io.from_model(self.model))
        return copy

    def _train_batches(self, epoch, skip_batches):
        order, views = epoch_plan(self.train_count, self.config["seed"], epoch)
        batch_size = self.config["batch_size"]
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
            data = self._image_pipeline(self.dataset.train, order, epoch, batch_size).skip(skip_batches)
        return self.strategy.experimental_distribute_dataset(data.prefetch(tf.data.AUTOTUNE))

    def _worker_batches(self, order, views, epoch, skip_batches):
        """Multi-worker batches: each replica reads only its slice of every global batch.

        The slices (np.array_split: sizes differ by at most one, and may be empty) of one
        step together are exactly the single-process batch, so the all-reduced gradient is
        the same. The next batches' images are decoded while this one trains.
        """
        strategy, batch_size = self.strategy, self.config["batch_size"]
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
        train, seed = self.dataset.train, self.config["seed"]
        crops, labels = [], []
        for index in indices:
            image = load_prepared(train.paths[index], self.ledger)
            if image is not None:
                crops.append(_random_view(tf.constant(image), index, seed, epoch))
                labels.append(train.labels[index])
        images = tf.stack(crops) if crops else tf.zeros([0, CROP, CROP, 3])
        return images, tf.constant(np.array(labels, np.int32))

    def _image_pipeline(self, split, order, epoch, batch_size, augment=True, ten_crop=False):
        paths, labels, ledger = split.paths, split.labels, self.ledger
        seed = self.config["seed"]

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

    def _val_batches(self):
        ten_crop = self.config["ten_crop_val"]
        if self.cache_after:
            features = self.val_features if ten_crop else self.val_features[:, 4:5]
            return tf.data.Dataset.from_tensor_slices((features, self.val_labels)).batch(self.config["batch_size"])
        order = np.arange(len(self.dataset.val))
        return self._image_pipeline(self.dataset.val, order, 0, self.config["batch_size"], augment=False, ten_crop=ten_crop)

    # --- the loop -------------------------------------------------------------------------

    def fit(self):
        started = time.perf_counter()
        state = self._restore()
        self._prepare_data()
        writer = tf.summary.create_file_writer(str(self.run / "tensorboard")) if self.chief else tf.summary.create_noop_writer()
        epochs = self.config["epochs"]
        with _StopOnSignal() as stop:
            for epoch in range(state["epoch"], epochs):
                self.optimizer.learning_rate.assign(learning_rate(self.config, epoch))
                epoch_started = time.perf_counter()
                totals = self._train_epoch(epoch, state, stop)
                row = self._finish_epoch(epoch, state, totals, time.perf_counter() - epoch_started)
                with writer.as_default(step=epoch + 1):
                    for key, value in row.items():
                        if key != "epoch" and value is not None:
                            tf.summary.scalar(key, value)
                self.log(_describe_row(row, epochs))
                if stop.signal_number and epoch + 1 < epochs:
                    self._write_history(state["history"], final=True)
                    raise TrainingInterrupted(
                        f"stopped by signal {stop.signal_number} after epoch {epoch + 1}; "
                        f"continue with --resume --output {self.run}", stop.signal_number)
        return self._finish(state, time.perf_counter() - started)

    def _train_epoch(self, epoch, state, stop):
        totals = state.pop("partial", None) or [0.0, 0.0, 0.0]
        batches = math.ceil(self.train_count / self.config["batch_size"])
        desc = f"epoch {epoch + 1}/{self.config['epochs']}"
        with progress_bar(self.train_count, self.progress, unit="img", desc=desc, initial=int(totals[2])) as bar:
            step = state["step"]
            for batch in self._train_batches(epoch, step):
                loss_sum, correct, count = self._step(batch)
                if not math.isfinite(loss_sum):
                    raise TrainingError(
                        f"loss became {loss_sum} at epoch {epoch + 1}, step {step + 1}: training diverged; lower --lr "
                        f"(now {self.config['lr']}). The last good checkpoint is kept in {self.run}")
                totals = [totals[0] + loss_sum, totals[1] + correct, totals[2] + count]
                step += 1
                bar.update(int(count))
                bar.set_postfix(loss=f"{totals[0] / max(totals[2], 1):.3f}", acc=f"{totals[1] / max(totals[2], 1):.3f}")
                if stop.signal_number and step < batches:
                    self._save(dict(state, epoch=epoch, step=step, partial=totals), final=True)
                    raise TrainingInterrupted(
                        f"stopped by signal {stop.signal_number} at epoch {epoch + 1}, step {step}; "
                        f"continue with --resume --output {self.run}", stop.signal_number)
        self.ledger.check(len(self.dataset.train) + len(self.dataset.val))
        return totals

    def _step(self, batch):
        try:
            return [float(value) for value in self.train_step(batch)]
        except LOST_WORKER as error:
            if not self.multiworker:
                raise
            cause = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
            raise TrainingError(
                f"lost contact with another worker ({cause}); the job cannot go on without it. "
                f"Restart every worker with --resume to continue from the last checkpoint in {self.run}") from None

    def _finish_epoch(self, epoch, state, totals, seconds):
        # A step's loss is computed before its update, so the last update of an epoch can
        # leave inf/NaN weights behind a finite loss: check them before they are saved.
        if not all(bool(tf.reduce_all(tf.math.is_finite(variable))) for variable in self.variables):
            raise TrainingError(
                f"weights became non-finite in epoch {epoch + 1}: training diverged; lower --lr "
                f"(now {self.config['lr']}). The last good checkpoint is kept in {self.run}")
        val_loss, val_accuracy = self._validate()
        row = dict(epoch=epoch + 1, train_loss=totals[0] / max(totals[2], 1), train_accuracy=totals[1] / max(totals[2], 1),
                   val_loss=val_loss, val_accuracy=val_accuracy, lr=learning_rate(self.config, epoch),
                   seconds=round(seconds, 3))
        state["history"].append(row)
        score = val_accuracy if val_accuracy is not None else row["train_accuracy"]
        if state["best_score"] is None or score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch + 1)
            self.best = [np.array(v.numpy()) for v in self.variables]
        state.update(epoch=epoch + 1, step=0)
        self._save(state)
        return row

    def _validate(self):
        if len(self.dataset.val) == 0:
            return None, None
        loss = correct = count = 0.0
        for views, labels in self._val_batches():  # views: (batch, 1 or 10, ...)
            batch_loss, batch_correct = self.evaluate_views(views, labels)
            loss, correct, count = loss + float(batch_loss), correct + float(batch_correct), count + len(labels)
        return (loss / count, correct / count) if count else (None, None)

    # --- checkpoints ----------------------------------------------------------------------

    def _seed_states(self):
        return [layer.seed_generator.state for layer in self.model.layers if hasattr(layer, "seed_generator")]

    def _save(self, state, final=False):
        if not self.chief:
            return
        record = dict(state)
        arrays = {f"current/{i}": np.array(v.numpy()) for i, v in enumerate(self.variables)}
        arrays.update({f"best/{i}": value for i, value in enumerate(self.best)})
        arrays.update({f"optimizer/{i}": np.array(v.numpy()) for i, v in enumerate(self.optimizer.variables)})
        arrays.update({f"seed/{i}": np.array(v.numpy()) for i, v in enumerate(self._seed_states())})
        checkpoints.save(self.run / "checkpoint.npz", record, arrays)
        self._write_history(record["history"], final=final)

    def _restore(self):
        self.best = [np.array(v.numpy()) for v in self.variables]
        if self.chief:
            for name in remove_stale_temporaries(self.run):
                self.log(f"removed {name}, left by an interrupted write")
        path = self.run / "checkpoint.npz"
        if not path.exists():
            return dict(epoch=0, step=0, history=[], best_score=None, best_epoch=None)
        record, arrays = checkpoints.load(path)
        for prefix, targets in (("current", self.variables), ("optimizer", self.optimizer.variables), ("seed", self._seed_states())):
            for i, variable in enumerate(targets):
                variable.assign(arrays[f"{prefix}/{i}"])
        self.best = [arrays[f"best/{i}"] for i in range(len(self.variables))]
        self.log(f"resuming {self.run} at epoch {record['epoch'] + 1}" + (f", step {record['step']}" if record["step"] else ""))
        return record

    def _write_history(self, history, final=False):
        if not self.chief:
            return
        columns = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows({key: ("" if row.get(key) is None else row[key]) for key in columns} for row in history)
        write_text(self.run / "history.csv", text.getvalue(), TrainingError)
        # Drawing the curves takes most of a second, longer than a cached epoch: redraw at
        # most every CURVES_EVERY seconds, and always at the end or on interruption.
        if history and (final or time.monotonic() - self._curves_drawn >= CURVES_EVERY):
            learning_curves(history, self.run / "curves.png")
            self._curves_drawn = time.monotonic()

    def _finish(self, state, seconds):
        self._write_history(state["history"], final=True)
        if self.chief:
            class_names = self.dataset.class_names
            last = weights_io.from_model(self.model, class_names)
            weights_io.save(last, self.run / "model_last.npz")
            for variable, value in zip(self.variables, self.best):
                variable.assign(value)
            weights_io.save(weights_io.from_model(self.model, class_names), self.run / "model.npz")
            self.ledger.write(self.run / "broken_files.json")
            shutil.rmtree(self.run / "feature_cache", ignore_errors=True)  # a resumed run rebuilds it
        final = state["history"][-1] if state["history"] else {}
        return dict(run=str(self.run), epochs=len(state["history"]), best_epoch=state["best_epoch"],
                    train_images=self.train_count, val_images=len(self.dataset.val), broken_files=len(self.ledger.errors),
                    cached=self.cache_after is not None, seconds=round(seconds, 3),
                    **{key: final.get(key) for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")})


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


def _describe_row(row, epochs):
    text = f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, accuracy {row['train_accuracy']:.3f}"
    if row["val_accuracy"] is not None:
        text += f"; val loss {row['val_loss']:.4f}, val accuracy {row['val_accuracy']:.3f}"
    return text + f" ({row['seconds']:.1f} s)"


class _StopOnSignal:
    """Turn SIGINT/SIGTERM into a request to stop after the current step (main thread only)."""

    def __init__(self):
        self.signal_number = None
        self._previous = {}

    def _handle(self, number, frame):
        self.signal_number = number

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False
