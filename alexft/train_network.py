"""The network a fine-tuning run trains: devices, precision, the frozen part, the optimizer,
one training step, validation, and its whole state as arrays (for checkpoints, the range
test and recovery)."""
import numpy as np
import tensorflow as tf

from . import weights as weights_io
from . import winograd
from .devices import make_strategy, precision_policy, uses_gpu
from .errors import AlexftError
from .evaluation import PROBABILITY_FLOOR
from .model import Kernels, build_alexnet, head, onednn_is_on
from .sgd import CaffeSGD, caffe_parameters

# What a collective op raises on the surviving workers when another worker is gone.
LOST_WORKER = (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


class LostWorker(AlexftError, RuntimeError):
    """Another worker of a multi-worker run is gone."""


def training_kernels(on_gpu, training_images):
    """The fastest way to compute the layers in training (`Kernels`). GPUs keep the formulation
    that runs everywhere, with cuDNN's own choices. On a CPU: grouped layers as one op where
    oneDNN runs them; the LRN as XLA kernels (with those, a bfloat16 step 18% faster, a float32 one
    7%, on a Zen 5); conv3-conv5 as Winograd convolutions where those are faster (float32 only), in runs
    long enough to repay XLA's compile (docs/benchmarks.md)."""
    if on_gpu:
        return Kernels()
    return Kernels(groups_as_one_op=onednn_is_on(), fused_lrn_training=True,
                   winograd_training=winograd.pays_off(training_images, winograd.cpu_features()))


class TrainingNetwork:
    """AlexNet with its frozen layers set, the trained variables and Caffe's SGD for them.

    `cache_after`: the layer whose cached output feeds the network (None: images).
    """

    def __init__(self, options, weight_set, class_count, training_images, cache_after, log):
        self.options, self.class_count = options, class_count
        self.strategy = make_strategy(options.strategy, options.device, options.heartbeat_timeout)
        self.multiworker = isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if self.multiworker:
            log(f"{self.strategy.num_replicas_in_sync} replicas in sync across the cluster")
        elif isinstance(self.strategy, tf.distribute.MirroredStrategy):  # how many, and on what, said as for a cluster
            devices = self.strategy.extended.worker_devices
            kinds = sorted({tf.DeviceSpec.from_string(device).device_type or "CPU" for device in devices})
            log(f"{len(devices)} replica{'s' if len(devices) != 1 else ''} in sync on this machine's "
                f"{' and '.join(kinds)}{'s' if len(devices) != 1 else ''}")
        self.policy = precision_policy(options.mixed_precision, self.strategy)
        if self.policy != "float32":
            log(f"mixed precision: {self.policy[len('mixed_'):]} compute, float32 weights, loss and softmax")
        with self.strategy.scope():
            kernels = training_kernels(uses_gpu(self.strategy), training_images)
            self.model = build_alexnet(class_count, seed=options.seed, dropout=options.dropout,
                                       dtype=self.policy, kernels=kernels)
            weights_io.assign(self.model, weight_set, skip=options.skip)
            self.net = head(self.model, cache_after) if cache_after else self.model
            self._freeze()
            self.optimizer = self._make_optimizer()
            self.optimizer.build(self.variables)
        self._train_step = self._make_train_step()
        self._evaluate = self._make_evaluate()
        self._loss_probe = None  # traced on first use
        self._frozen = None

    def _freeze(self):
        trained, options = set(self.options.train), self.options
        for layer in self.model.layers:
            layer.trainable = layer.name in trained
        self.variables, self.multipliers, self.decays = caffe_parameters(
            self.model, options.train, skip=options.skip, weight_decay=options.weight_decay,
            fresh_lr_multiplier=options.fresh_lr_multiplier, bias_lr_multiplier=options.bias_lr_multiplier)

    def set_rule(self, decay, fresh_bias_factor):
        """From the next step on: `decay` on the kernels (biases keep none), and the rate
        multipliers of the fresh layers' biases (Caffe's) times `fresh_bias_factor`; the
        pre-trained layers' biases keep Caffe's multipliers. The step is traced again."""
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        _, caffe_multipliers, caffe_decays = caffe_parameters(
            self.model, self.options.train, skip=self.options.skip, weight_decay=1.0,
            fresh_lr_multiplier=self.options.fresh_lr_multiplier, bias_lr_multiplier=self.options.bias_lr_multiplier)
        fresh = [name in self.options.skip for name in self.options.train for _ in ("kernel", "bias")]
        self.decays = optimizer.decays = [decay * is_kernel for is_kernel in caffe_decays]
        self.multipliers = optimizer.multipliers = [
            multiplier * (fresh_bias_factor if is_fresh and not is_kernel else 1.0)
            for multiplier, is_kernel, is_fresh in zip(caffe_multipliers, caffe_decays, fresh)]
        self._train_step = self._make_train_step()

    def _make_optimizer(self):
        import keras

        optimizer = CaffeSGD(0.0, self.options.momentum, self.multipliers, self.decays)
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

    def _make_loss_probe(self):
        net, strategy = self.net, self.strategy

        def replica_loss(images, labels):
            logits = net(images, training=False)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))
            return tf.reduce_sum(losses), tf.cast(tf.shape(labels)[0], tf.float32)

        @tf.function(reduce_retracing=True)
        def probe(batch):
            results = strategy.run(replica_loss, args=batch)
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in results]

        return probe

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
            loss = -tf.reduce_sum(tf.math.log(tf.maximum(picked, PROBABILITY_FLOOR)))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, -1, output_type=tf.int32), labels), tf.float32))
            return loss, correct

        return evaluate

    # --- training and validation ------------------------------------------------------------

    def set_rate(self, rate, momentum_follows=True):
        """The base rate of the next steps; `momentum_follows`: see CaffeSGD.change_rate."""
        getattr(self.optimizer, "inner_optimizer", self.optimizer).change_rate(rate, momentum_follows)

    def step(self, batch):
        """One update; returns (summed loss, correct, images) of the batch as floats."""
        try:
            return [float(value) for value in self._train_step(batch)]
        except LOST_WORKER as error:
            if not self.multiworker:
                raise
            raise LostWorker(_why_lost(error)) from None

    def batch_loss(self, batch):
        """The mean loss of the weights as they are on a training batch (as `step` takes it),
        without dropout and without an update."""
        if self._loss_probe is None:
            self._loss_probe = self._make_loss_probe()
        loss_sum, count = (float(value) for value in self._loss_probe(batch))
        return loss_sum / max(count, 1.0)

    def validate(self, batches):
        """(mean loss, accuracy) over (views, labels) batches, or (None, None) for none."""
        loss = correct = count = 0.0
        for views, labels in batches:  # views: (batch, 1 or 10, ...)
            batch_loss, batch_correct = self._evaluate(views, labels)
            loss, correct, count = loss + float(batch_loss), correct + float(batch_correct), count + len(labels)
        return (loss / count, correct / count) if count else (None, None)

    def weights_finite(self):
        return all(bool(tf.reduce_all(tf.math.is_finite(variable))) for variable in self.variables)

    # --- state ------------------------------------------------------------------------------

    def _seed_states(self):
        return [layer.seed_generator.state for layer in self.model.layers if hasattr(layer, "seed_generator")]

    def _state_groups(self):
        return {"current": self.variables, "optimizer": self.optimizer.variables, "seed": self._seed_states()}

    def trained_values(self):
        return [np.array(variable.numpy()) for variable in self.variables]

    def state_arrays(self):
        """Everything an update changes, as named numpy copies: trained variables, optimizer
        slots, iteration count and rate, dropout RNG states."""
        return {f"{group}/{i}": np.array(variable.numpy())
                for group, targets in self._state_groups().items() for i, variable in enumerate(targets)}

    def load_state_arrays(self, arrays):
        for group, targets in self._state_groups().items():
            for i, variable in enumerate(targets):
                variable.assign(arrays[f"{group}/{i}"])

    def weight_set(self, trained_values, class_names, trained_only=False):
        """The network with `trained_values` in its trained layers, as a WeightSet (all layers,
        or the trained ones only)."""
        params = {}
        if not trained_only:
            if self._frozen is None:  # the other layers never change: read them once
                self._frozen = weights_io.from_model(self.model).params
            params.update(self._frozen)
        for i, name in enumerate(self.options.train):
            params[name] = (trained_values[2 * i], trained_values[2 * i + 1])  # caffe_parameters' order
        return weights_io.WeightSet(params, list(class_names))


def _why_lost(error):
    """One line of TensorFlow's (often long) error: the one that says a worker stopped sending
    heartbeats when there is one, else the last."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return next((line for line in lines if "heartbeat" in line), lines[-1])[:200]
