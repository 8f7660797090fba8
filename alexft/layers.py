"""AlexNet's two layers Keras does not have: Caffe's grouped convolution and its LRN.

Both are registered with Keras (package "alexft") and describe themselves in `get_config`, so
a model holding them saves (.keras, .h5), loads, clones and exports like any Keras model.
`import alexft` registers them as soon as Keras is imported (see alexft/__init__.py).
"""
import dataclasses

import keras
import tensorflow as tf

from . import architecture as arch
from . import winograd

PACKAGE = "alexft"


@keras.saving.register_keras_serializable(PACKAGE)
class GroupedConv2D(keras.layers.Layer):
    """Caffe's convolution with `groups`: output group g sees only input group g.

    Holds one kernel of shape (k, k, in_channels / groups, filters), as the weights file does.
    `as_one_op`: one grouped `tf.nn.conv2d` instead of one per group (see the module's notes).
    `winograd_training`: when called with training=True, a 3x3 stride-1 layer in float32 runs as
    Winograd F(4x4, 3x3) (faster on a CPU, round-off within ~1e-5); inference stays direct.
    """

    def __init__(self, spec, kernel_initializer="zeros", bias_initializer="zeros", as_one_op=False,
                 winograd_training=False, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec if isinstance(spec, arch.Conv) else arch.Conv(**spec)  # a dict from get_config
        self.as_one_op = as_one_op
        self.winograd_training = winograd_training
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def get_config(self):
        return dict(super().get_config(), spec=dataclasses.asdict(self.spec), as_one_op=self.as_one_op,
                    winograd_training=self.winograd_training,
                    kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                    bias_initializer=keras.initializers.serialize(self.bias_initializer))

    def build(self, input_shape):
        spec = self.spec
        if input_shape[-1] != spec.in_channels:
            raise ValueError(f"{self.name} expects {spec.in_channels} channels, got {input_shape[-1]}")
        kernel_shape = (spec.kernel, spec.kernel, spec.in_channels // spec.groups, spec.filters)
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape, initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(spec.filters,), initializer=self.bias_initializer)

    def call(self, inputs, training=None):
        spec = self.spec
        if inputs.shape.rank == 4 and inputs.shape[0] == 0:  # (a batch size known when the call is traced)
            # TensorFlow's oneDNN conv2d hands an empty batch back as it came: (0, 227, 227, 3).
            return tf.zeros(self.compute_output_shape(inputs.shape), inputs.dtype)
        kernel = tf.cast(self.kernel, inputs.dtype)
        fast = training and self.winograd_training
        if fast and winograd.applies(spec.kernel, spec.stride, spec.padding, inputs.dtype):
            outputs = winograd.conv3x3(inputs, kernel, spec.groups)
        elif self.as_one_op or spec.groups == 1:
            # conv2d infers the groups from the kernel's input depth.
            outputs = tf.nn.conv2d(inputs, kernel, strides=spec.stride, padding=spec.padding.upper())
        else:
            groups = zip(tf.split(inputs, spec.groups, axis=-1), tf.split(kernel, spec.groups, axis=-1))
            outputs = tf.concat([
                tf.nn.conv2d(x, k, strides=spec.stride, padding=spec.padding.upper()) for x, k in groups
            ], axis=-1)
        return tf.nn.relu(tf.nn.bias_add(outputs, tf.cast(self.bias, inputs.dtype)))

    def compute_output_shape(self, input_shape):
        """Height and width each (inputs need not be square), None where the input's is unknown."""
        return (input_shape[0], *(self._side(side) for side in input_shape[1:3]), self.spec.filters)

    def _side(self, size):
        spec = self.spec
        if size is None:
            return None
        if spec.padding == "valid":
            return (size - spec.kernel) // spec.stride + 1
        return -(-size // spec.stride)


@keras.saving.register_keras_serializable(PACKAGE)
class LocalResponseNorm(keras.layers.Layer):
    """Caffe's across-channel LRN with AlexNet's constants.

    `fused` (set while tracing, see `fusing_lrn`): one XLA-compiled kernel instead of TensorFlow's
    LRN op, ~19% faster inference at batch 64 on a CPU, but compiled once per batch shape.
    `fused_training`: when called with training=True, the same kernel forward and one more for
    its gradient (`_lrn_for_training`), faster in training on a CPU (in bfloat16 most, where
    TensorFlow's op casts to float32 and back; docs/benchmarks.md).
    """

    fused = False

    def __init__(self, fused_training=False, **kwargs):
        super().__init__(**kwargs)
        self.fused_training = fused_training

    def get_config(self):
        return dict(super().get_config(), fused_training=self.fused_training)

    def call(self, inputs, training=None):
        if training and self.fused_training:
            return _lrn_for_training(inputs)
        if self.fused:
            return _lrn_one_kernel(inputs)
        # TF's LRN kernel is float32-only on CPU; compute there and cast back.
        outputs = tf.nn.local_response_normalization(tf.cast(inputs, tf.float32), **arch.LRN)
        return tf.cast(outputs, inputs.dtype)


@keras.saving.register_keras_serializable(PACKAGE)
class CaffeMaxPooling2D(keras.layers.MaxPooling2D):
    """Max pooling sized as Caffe sizes it: ceil((side - pool) / stride) + 1 windows, the last one
    clipped at the border, where Keras' "valid" rounds down and drops it. The same on AlexNet's
    227x227 input (55, 27 and 13 leave nothing over); on other sizes (a model without fc6) the
    last row or column of windows would otherwise be missing. Channels last always, whatever
    Keras' image_data_format says (the padding above is laid out so)."""

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format="channels_last", **kwargs)

    def call(self, inputs):
        missing = [self._missing(inputs, axis) for axis in (1, 2)]
        if all(isinstance(side, int) and side == 0 for side in missing):  # 227x227: no pad op at all
            return super().call(inputs)
        lowest = tf.as_dtype(inputs.dtype).min  # padding never wins a max
        padded = tf.pad(inputs, [[0, 0], [0, missing[0]], [0, missing[1]], [0, 0]], constant_values=lowest)
        return super().call(padded)

    def _missing(self, inputs, axis):
        """The rows (or columns) the last, clipped window reaches past the border. Where the side
        is known only when run, stride - 1: "valid" pooling then counts ceil((side - pool) /
        stride) + 1 windows on any side, and the extra row, if no window needs it, is never read.
        (Padding by a tensor computed from the side would leave every axis of the result
        unknown, channels too: TF Lite then cannot convert the convolutions after it.)"""
        side = inputs.shape[axis]
        return self.strides[0] - 1 if side is None else (-(side - self.pool_size[0])) % self.strides[0]

    def compute_output_shape(self, input_shape):
        sides = [None if side is None else -(-(side - self.pool_size[0]) // self.strides[0]) + 1
                 for side in input_shape[1:3]]
        return (input_shape[0], *sides, input_shape[3])


def _lrn_constants():
    return tuple(arch.LRN[key] for key in ("depth_radius", "bias", "alpha", "beta"))


def _window_sum(values, radius):
    """Each channel's sum over the 2r+1 channels around it (zeros past the ends), as shifted
    slices XLA fuses with what surrounds them."""
    channels = values.shape[-1]
    padded = tf.pad(values, [[0, 0], [0, 0], [0, 0], [radius, radius]])
    return tf.add_n([padded[..., shift:shift + channels] for shift in range(2 * radius + 1)])


def _lrn_scale(x):
    """bias + alpha * (window sum of x^2), for float32 `x`."""
    radius, bias, alpha, _ = _lrn_constants()
    return bias + alpha * _window_sum(tf.square(x), radius)


def _times_power(values, scale):
    """values * scale^-beta."""
    beta = arch.LRN["beta"]
    if beta == 0.75:  # AlexNet's: t^-0.75 as two reciprocal roots, cheaper than a power
        return values * tf.math.rsqrt(scale) * tf.math.rsqrt(tf.sqrt(scale))
    return values * tf.pow(scale, -beta)


@tf.function(jit_compile=True)
def _lrn_one_kernel(x):
    """TensorFlow's LRN formula, x / (bias + alpha * sum of squares over 2r+1 channels) ** beta, as
    elementwise ops XLA fuses into one pass. TensorFlow's op sums the squares with a banded
    (channels x channels) matmul, then takes a general power.

    Computed in float32 whatever `x`'s dtype, with the casts inside the kernel: for bfloat16
    that is one pass over the activations instead of three (4% of a batch of 64 on a Zen 4)."""
    wide = tf.cast(x, tf.float32)
    return tf.cast(_times_power(wide, _lrn_scale(wide)), x.dtype)


@tf.function(jit_compile=True)
def _lrn_gradient_kernel(x, upstream):
    """The LRN's gradient with respect to its input, in one pass like the forward kernel:
    with s_j = bias + alpha * (window sum of x^2)_j and y_j = x_j * s_j^-beta,
    dL/dx_i = g_i * s_i^-beta - 2 * alpha * beta * x_i * (window sum of g * y / s)_i
    (the window is symmetric, so the channels whose sums hold x_i are the window around i)."""
    radius, _, alpha, beta = _lrn_constants()
    wide, gradient = tf.cast(x, tf.float32), tf.cast(upstream, tf.float32)
    scale = _lrn_scale(wide)
    spread = _window_sum(_times_power(gradient * wide, scale) / scale, radius)
    return tf.cast(_times_power(gradient, scale) - (2 * alpha * beta) * wide * spread, x.dtype)


@tf.custom_gradient
def _lrn_for_training(x):
    """The LRN as two XLA kernels, forward and gradient (recomputing the scale from `x`, which
    costs less than keeping it). TensorFlow's op needs float32 on a CPU, so in bfloat16 it adds
    four casts; these kernels read and write bfloat16 themselves."""
    return _lrn_one_kernel(x), lambda upstream: _lrn_gradient_kernel(x, upstream)


@keras.saving.register_keras_serializable(PACKAGE)
class ClassifierModel(keras.Model):
    """A functional model that knows the names of the classes it scores (`class_names`, what
    `decode_predictions` needs) and keeps them through `.keras` and `.h5` save and load, and
    when it sits inside another model; in every other way a `keras.Model`."""

    def __init__(self, *args, class_names=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_names = None if class_names is None else [str(name) for name in class_names]

    def get_config(self):
        return dict(super().get_config(), class_names=None if self.class_names is None else list(self.class_names))

    def call(self, inputs, training=None, mask=None):
        return super().call(_sides_checked(inputs, self.inputs[0].shape), training=training, mask=mask)

    def __call__(self, *args, **kwargs):
        if args:
            self._refuse_raw_pixels(args[0])
        return super().__call__(*args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._refuse_raw_pixels(x)
        declared, given = self.inputs[0].shape, tuple(getattr(x, "shape", ()))
        if len(given) == 3 and len(declared) == 4 and given[-1] == declared[-1]:
            # (Keras took its rows as 227 images of shape (227, 3): "found shape=(32, 227, 3)")
            raise ValueError(f"one image of shape {given}: predict takes a batch of them; give x[None] "
                             "(np.expand_dims(x, 0)) for one")
        if len(given) == 4 and len(declared) == 4:  # the whole array, before Keras batches it:
            _check_sides(list(given[1:3]), list(declared[1:3]))  # in its graph, the check is pages of TensorFlow
            if given[0] == 0:  # (Keras' predict failed on it: "cannot access local variable 'batch_outputs'")
                return keras.ops.convert_to_numpy(self(x, training=False))
        return super().predict(x, *args, **kwargs)

    def _refuse_raw_pixels(self, images):
        """Whole-number pixels (an image as read, uint8) given to a model that takes floats have not
        been through preprocess_input: they were scored, as nonsense, without a word."""
        given, declared = getattr(images, "dtype", None), self.inputs[0].dtype
        if given is None or len(self.inputs) != 1 or not tf.as_dtype(declared).is_floating:
            return  # (a model with the preprocessing inside takes uint8 images)
        if tf.as_dtype(given).is_integer:
            raise ValueError(f"images of {tf.as_dtype(given).name} pixels: the model takes preprocessed views, float "
                             "(alexft.preprocess_input makes them from images)")

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        class_names = config.pop("class_names", None)
        model = super().from_config(config, custom_objects=custom_objects)
        model.class_names = class_names
        return model


# The legacy .h5 format looks up the saved model's own class by its bare name.
keras.saving.get_custom_objects().setdefault(ClassifierModel.__name__, ClassifierModel)


SMALLEST_SIDE = 67  # pool5 then pools a whole 3x3 window; smaller sides pool clipped or empty windows (a crash)


def _sides_checked(images, declared):
    """`images` if their height and width suit the model's input (`declared`, e.g. (None, 227,
    227, 3)): Keras checks a call against it only until a second shape relaxes the traced
    function to (None, None, None, 3); then a 224x224 batch went through, and a 38x38 one
    killed the process in pooling. Checked here at trace time where the sides are known, else
    as an assertion in the graph."""
    if len(getattr(images, "shape", ())) != 4 or len(declared) != 4:
        return images  # (a dict or list of inputs, or images without a batch axis: Keras' own check says what is wrong)
    wanted, sides = list(declared[1:3]), list(images.shape[1:3])
    if all(side is not None for side in sides):
        _check_sides(sides, wanted)
        return images
    if keras.backend.is_keras_tensor(images):  # a model being built around this one: checked when it runs
        return images
    runtime = tf.shape(images)[1:3]
    fixed = [tf.constant(True) if side is None else tf.equal(runtime[axis], side) for axis, side in enumerate(wanted)]
    ok = tf.logical_and(tf.reduce_all(runtime >= SMALLEST_SIDE), tf.reduce_all(tf.stack(fixed)))
    said = _size_rule(wanted)
    with tf.control_dependencies([tf.debugging.Assert(ok, [f"images of these sides (height, width) do not suit "
                                                           f"the model: {said}:", runtime])]):
        return tf.identity(images)


def _size_rule(wanted):
    if all(side is not None for side in wanted):
        return f"it takes {wanted[0]}x{wanted[1]} pixels (preprocess_input makes them)"
    return f"AlexNet needs at least {SMALLEST_SIDE}x{SMALLEST_SIDE} pixels"


def _check_sides(sides, wanted):
    fits = all(side == want for side, want in zip(sides, wanted) if want is not None)
    if not fits or min(sides) < SMALLEST_SIDE:
        raise ValueError(f"images of {sides[0]}x{sides[1]} pixels: {_size_rule(wanted)}")
