"""The benchmark suite's arithmetic ceiling divides by AlexNet's multiply-adds per image: checked
against a count from Caffe's definition (kernel, stride, pad, group per layer; its output-size
rule floor((in + 2 pad - kernel) / stride) + 1), not from the model."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import alexft_cases  # noqa: E402

from alexft.model import build_alexnet  # noqa: E402

# (name, kernel, stride, pad, group, outputs), the input being 227x227x3; pooling (3, stride 2)
# after conv1, conv2 and conv5.
CONVS = [("conv1", 11, 4, 0, 1, 96), ("conv2", 5, 1, 2, 2, 256), ("conv3", 3, 1, 1, 1, 384),
         ("conv4", 3, 1, 1, 2, 384), ("conv5", 3, 1, 1, 2, 256)]
FULLY_CONNECTED = [(9216, 4096), (4096, 4096), (4096, 1000)]


def caffe_multiply_adds(size=227, channels=3):
    total = 0
    for name, kernel, stride, pad, group, outputs in CONVS:
        size = (size + 2 * pad - kernel) // stride + 1
        total += size * size * outputs * kernel * kernel * channels // group
        channels = outputs
        if name in ("conv1", "conv2", "conv5"):
            size = (size - 3 + 1) // 2 + 1  # Caffe's pooling rounds up: ceil((in - 3) / 2) + 1
    assert size * size * channels == FULLY_CONNECTED[0][0]
    return total + sum(inputs * outputs for inputs, outputs in FULLY_CONNECTED)


def test_multiply_adds_per_image_follow_caffes_definition():
    assert alexft_cases.multiply_adds_per_image(build_alexnet()) == caffe_multiply_adds() == 724_406_816


def test_a_smaller_head_counts_fewer_multiply_adds():
    assert (caffe_multiply_adds() - alexft_cases.multiply_adds_per_image(build_alexnet(num_classes=10))
            == 4096 * (1000 - 10))


def caffe_training_multiply_adds():
    """Caffe's backward pass of a training step: every layer's weight gradient costs its forward
    multiply-adds again, and every layer's gradient to its input as well, but conv1's: the data
    layer needs none (Caffe's propagate_down is false there)."""
    conv1 = 55 * 55 * 96 * 11 * 11 * 3
    return 3 * caffe_multiply_adds() - conv1


def test_a_training_step_counts_three_passes_but_the_images_gradient():
    assert alexft_cases.multiply_adds_per_training_image(build_alexnet()) == caffe_training_multiply_adds()
    assert caffe_training_multiply_adds() == 2_067_805_248
