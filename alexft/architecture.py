"""The bvlc_alexnet network as data: the one place its layer table is written.

Kept free of TensorFlow so that reading and checking a weights file stays cheap.
The layer names and shapes are the contract with `bvlc_alexnet.npy`: conv kernels
are (height, width, in_channels / groups, filters), fc kernels (inputs, outputs),
and fc6's 9216 inputs are pool5 flattened in (height, width, channel) order.
"""
from dataclasses import dataclass
from typing import Optional

INPUT_SIZE = 227
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Conv:
    filters: int
    kernel: int
    stride: int
    padding: str  # "valid" or "same"; Caffe's pads here equal TF's SAME at stride 1
    groups: int
    in_channels: int
    lrn: bool  # Caffe's norm layer follows the ReLU
    pool: bool  # 3x3 stride-2 max pooling follows


@dataclass(frozen=True)
class Dense:
    inputs: int
    outputs: Optional[int]  # None: the class count
    relu: bool
    dropout: bool


LAYERS = {
    "conv1": Conv(96, 11, 4, "valid", 1, 3, lrn=True, pool=True),
    "conv2": Conv(256, 5, 1, "same", 2, 96, lrn=True, pool=True),
    "conv3": Conv(384, 3, 1, "same", 1, 256, lrn=False, pool=False),
    "conv4": Conv(384, 3, 1, "same", 2, 384, lrn=False, pool=False),
    "conv5": Conv(256, 3, 1, "same", 2, 384, lrn=False, pool=True),
    "fc6": Dense(6 * 6 * 256, 4096, relu=True, dropout=True),
    "fc7": Dense(4096, 4096, relu=True, dropout=True),
    "fc8": Dense(4096, None, relu=False, dropout=False),
}
LAYER_NAMES = tuple(LAYERS)


def _ends():
    names = []
    for name, layer in LAYERS.items():
        names.append(name)
        if isinstance(layer, Conv):
            names += [f"norm{name[-1]}"] * layer.lrn + [f"pool{name[-1]}"] * layer.pool
    return tuple(names)


ENDS = _ends()  # the layers a model may end at (a last_layer), in order: norm1 and pool1 after conv1, ...

# Caffe's LRN: x / (k + alpha/n * sum of x^2 over n channels)^beta, n=5, alpha=1e-4.
LRN = dict(depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75)
DROPOUT_RATE = 0.5


def parameter_shapes(num_classes=IMAGENET_CLASSES):
    """Return {layer: (weights shape, biases shape)} for a network with `num_classes` outputs."""
    shapes = {}
    for name, layer in LAYERS.items():
        if isinstance(layer, Conv):
            kernel = (layer.kernel, layer.kernel, layer.in_channels // layer.groups, layer.filters)
            shapes[name] = (kernel, (layer.filters,))
        else:
            outputs = layer.outputs or num_classes
            shapes[name] = ((layer.inputs, outputs), (outputs,))
    return shapes


def parameter_count(num_classes=IMAGENET_CLASSES):
    total = 0
    for kernel, bias in parameter_shapes(num_classes).values():
        total += _product(kernel) + _product(bias)
    return total


def _product(shape):
    result = 1
    for size in shape:
        result *= size
    return result
