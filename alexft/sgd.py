"""Caffe's SGD update, one fused kernel per variable.

    history = momentum * history - lr * lr_mult * (gradient + decay * weights)
    weights += history

That is Caffe's SGDSolver with per-parameter `lr_mult` and L2 `weight_decay` (it adds the
decay to the gradient, so the decay goes through the momentum, unlike Keras' decoupled
`weight_decay`). Written as the decay term in the loss, a multiplied gradient and Keras' SGD,
the same update cost about ten passes over each weight array (fc6's is 151 MB); here it is
one decay add and TensorFlow's fused momentum kernel.
"""
import keras
import numpy as np
import tensorflow as tf

# Caffe's fine-tuning recipe for bvlc_alexnet, kept with the options (importable without TensorFlow).
from .train_options import BIAS_LR_MULTIPLIER, FRESH_LR_MULTIPLIER, WEIGHT_DECAY


class CaffeSGD(keras.optimizers.SGD):
    """Keras' SGD (same variables, so the same checkpoints) with Caffe's per-variable
    learning-rate multipliers and weight decays, given in the order of the variables
    the optimizer is built with."""

    def __init__(self, learning_rate, momentum, multipliers, decays, **kwargs):
        # Caffe's rule has no Nesterov step, and its decay is not Keras' decoupled one.
        if kwargs.get("nesterov") or kwargs.get("weight_decay"):
            raise ValueError("CaffeSGD takes neither nesterov nor weight_decay (decays are per variable)")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        if len(multipliers) != len(decays):
            raise ValueError(f"{len(multipliers)} multipliers for {len(decays)} decays")
        self.multipliers, self.decays = list(multipliers), list(decays)

    def build(self, variables):
        if not self.built and len(variables) != len(self.decays):
            raise ValueError(f"{len(variables)} variables for {len(self.decays)} multipliers and decays")
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        gradient = tf.cast(gradient, variable.dtype)
        if self.decays[index]:
            gradient += self.decays[index] * _tensor(variable)
        rate = tf.cast(learning_rate, variable.dtype) * self.multipliers[index]
        if self.momentum == 0:
            tf.raw_ops.ResourceApplyGradientDescent(var=_handle(variable), alpha=rate, delta=gradient)
            return
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(self.momentums[index]), lr=rate, grad=gradient,
            momentum=tf.cast(self.momentum, variable.dtype), use_locking=False,
        )

    def change_rate(self, rate, momentum_follows=True):
        """Set the base rate of the next steps. Caffe's history holds rate x gradient, so after
        a drop the old rate's velocity coasts on for tens of steps: a run that was oscillating
        saw its loss rise for 5-10 epochs after the schedule's 10x drop. With
        `momentum_follows`, a lower rate rescales the history by the new rate over the old, as
        if the rate multiplied it (PyTorch's rule), and takes effect at the next step. A higher
        rate (a resume that moves the drop later, a larger --lr) leaves the history as it is and
        builds up over the next steps, as in Caffe, rather than multiplying the velocity at
        once. Steps at one rate stay Caffe's."""
        old = self.learning_rate.numpy()
        new = np.asarray(rate, old.dtype)  # compared as stored: 0.01 is not float32(0.01)
        if momentum_follows and self.built and self.momentum and 0 < new < old:
            for history in self.momentums:
                history.assign(history * float(new / old))
        self.learning_rate.assign(new)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers, "decays": self.decays}


def caffe_parameters(model, train, skip=(), weight_decay=WEIGHT_DECAY, fresh_lr_multiplier=FRESH_LR_MULTIPLIER,
                     bias_lr_multiplier=BIAS_LR_MULTIPLIER):
    """The trained layers' kernels and biases with their multipliers and decays, as Caffe's
    fine-tuning prototxt sets them: biases at `bias_lr_multiplier`x the rate and without decay,
    freshly initialised (`skip`) layers at `fresh_lr_multiplier`x."""
    variables, multipliers, decays = [], [], []
    for name in train:
        layer = model.get_layer(name)
        fresh = fresh_lr_multiplier if name in skip else 1.0
        for variable, is_bias in ((layer.kernel, False), (layer.bias, True)):
            variables.append(variable)
            multipliers.append(fresh * (bias_lr_multiplier if is_bias else 1.0))
            decays.append(0.0 if is_bias else weight_decay)
    return variables, multipliers, decays


def _unwrap(variable):
    """The TensorFlow variable behind a Keras one (under a strategy, the distributed one,
    whose handle inside an update is the local replica's)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _handle(variable):
    return _unwrap(variable).handle


def _tensor(variable):
    return tf.convert_to_tensor(_unwrap(variable))
