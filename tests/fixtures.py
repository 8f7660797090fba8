"""Test data built from the specification: weights in the canonical layout, real photos."""
import os
from pathlib import Path

import numpy as np

# Shapes written out from shared/docs/BVLC_ALEXNET.md, not taken from alexft.
CANONICAL_SHAPES = {
    "conv1": ((11, 11, 3, 96), (96,)),
    "conv2": ((5, 5, 48, 256), (256,)),
    "conv3": ((3, 3, 256, 384), (384,)),
    "conv4": ((3, 3, 192, 384), (384,)),
    "conv5": ((3, 3, 192, 256), (256,)),
    "fc6": ((9216, 4096), (4096,)),
    "fc7": ((4096, 4096), (4096,)),
    "fc8": ((4096, 1000), (1000,)),
}


# Gains so that, on mean-subtracted pixels (std ~60), activations stay of order one and the
# softmax is neither flat nor saturated: then probability comparisons mean something.
GAINS = {"conv1": 1 / 64, "fc7": 0.1, "fc8": 5}


def random_params(seed=0, num_classes=1000):
    """He-scaled random weights (see GAINS) in the layout of bvlc_alexnet.npy."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, (kernel_shape, bias_shape) in CANONICAL_SHAPES.items():
        if name == "fc8":
            kernel_shape, bias_shape = (4096, num_classes), (num_classes,)
        fan_in = int(np.prod(kernel_shape[:-1]))
        kernel = rng.standard_normal(kernel_shape, dtype=np.float32) * np.float32(GAINS.get(name, 1) * np.sqrt(2.0 / fan_in))
        bias = rng.standard_normal(bias_shape, dtype=np.float32) * np.float32(0.1)
        params[name] = [kernel, bias]
    return params


def photo_paths():
    """Real photos shipped by scikit-image and scikit-learn."""
    import skimage.data
    import sklearn.datasets

    skimage_dir = Path(os.path.dirname(skimage.data.__file__))
    sklearn_dir = Path(os.path.dirname(sklearn.datasets.__file__)) / "images"
    return {
        "chelsea": skimage_dir / "chelsea.png",  # a cat
        "coffee": skimage_dir / "coffee.png",  # a cup of coffee
        "astronaut": skimage_dir / "astronaut.png",
        "camera": skimage_dir / "camera.png",  # greyscale
        "china": sklearn_dir / "china.jpg",
        "flower": sklearn_dir / "flower.jpg",
    }


def write_digits_folder(root, per_class=20, size=64, seed=0):
    """scikit-learn's handwritten digits (real data) as a folder of PNGs, one sub-folder per digit.

    The 8x8 images (0-16) are scaled to 0-255, upscaled to `size` and drawn dark on light.
    """
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        members = rng.permutation(np.flatnonzero(digits.target == label))[:per_class]
        folder = Path(root) / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in members:
            image = (255 - digits.images[index] * (255 / 16)).astype(np.uint8)
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(folder / f"{index:04d}.png"), image)
    return Path(root)
