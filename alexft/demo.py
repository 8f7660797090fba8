"""Stand-ins for a machine without the real weights: generated weights and small real images.

The notebooks and the docs run top to bottom on a fresh install with these. Nothing here is
trained on ImageNet: predictions made with `generated_weights()` mean nothing, and every
caller says so. The images are real (they ship with scikit-image and scikit-learn, which
the `notebooks` and `test` extras install).
"""
import os
from pathlib import Path

import numpy as np

from . import architecture as arch
from . import weights as weights_io
from .weights.sources import cache_dir

# He-scaled random weights would give activations that grow or vanish with depth on
# mean-subtracted pixels (std ~60); these gains keep them of order one, so the softmax is
# neither flat nor saturated and a fine-tuned fc8 has something to learn from.
GAINS = {"conv1": 1 / 64, "fc7": 0.1, "fc8": 5}


def generated_weights(path=None, seed=0):
    """Random weights in bvlc_alexnet's layout, with the ImageNet class names, as an `.npz`.

    Written once to `path` (default: the alexft cache) and reused. Returns the path.
    """
    path = Path(path) if path else cache_dir() / f"generated_alexnet_seed{seed}.npz"
    if path.is_file():
        return path
    params = random_params(arch.parameter_shapes(), seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    return weights_io.save(weights_io.WeightSet(params, weights_io.imagenet_class_names()), path)


def random_params(shapes, seed=0):
    """{layer: (weights, biases)} drawn at random (He-scaled, see GAINS) for `shapes`
    ({layer: (weights shape, biases shape)})."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, (kernel_shape, bias_shape) in shapes.items():
        scale = GAINS.get(name, 1) * np.sqrt(2.0 / np.prod(kernel_shape[:-1]))
        params[name] = [rng.standard_normal(kernel_shape, np.float32) * np.float32(scale),
                        rng.standard_normal(bias_shape, np.float32) * np.float32(0.1)]
    return params


def weights_or_generated(log=print):
    """(path, True) for the weights the command line finds ($ALEXFT_WEIGHTS, weights/ under the
    current folder, the cache; never a download), else (generated weights, False); `log` says
    which, loudly. The path is absolute: a notebook may change its folder afterwards."""
    from .errors import WeightsError
    from .weights.sources import LOOKED_FOR, cache_dir, resolve_weights

    try:
        real = resolve_weights(None, download=False)
    except WeightsError as error:
        named = os.environ.get("ALEXFT_WEIGHTS")
        # `jupyter lab notebooks/` runs the kernels in notebooks/: the project's weights/ is beside it
        project = Path.cwd().parent / "weights"
        real = None if named else next((project / name for name in LOOKED_FOR if (project / name).is_file()), None)
        if real is None:
            why = str(error) if named else "no weights file found (ALEXFT_WEIGHTS is not set, none in weights/ or the cache)"
            log(f"{why}: using GENERATED RANDOM WEIGHTS. Every cell runs, but what the network computes is meaningless. "
                f"For the real demo, put bvlc_alexnet.npy (or .npz) in {cache_dir()} or in weights/ here or beside "
                "this folder, or set ALEXFT_WEIGHTS to its path.")
            return generated_weights(), False
    real = Path(real).absolute()
    log(f"Using the real weights: {real}")
    return real, True


def sample_photos():
    """Real photos shipped by scikit-image and scikit-learn, by name."""
    import skimage.data
    import sklearn.datasets

    skimage_dir = Path(skimage.data.__file__).parent
    sklearn_dir = Path(sklearn.datasets.__file__).parent / "images"
    return {
        "chelsea": skimage_dir / "chelsea.png",  # a cat
        "coffee": skimage_dir / "coffee.png",  # a cup of coffee
        "astronaut": skimage_dir / "astronaut.png",
        "camera": skimage_dir / "camera.png",  # greyscale
        "china": sklearn_dir / "china.jpg",
        "flower": sklearn_dir / "flower.jpg",
    }


def write_digits(root, per_class=20, size=64, seed=0, start=0, classes=range(10)):
    """scikit-learn's handwritten digits (real data) as PNGs in ROOT/digit_<d>/ folders.

    Per class, images `start` .. `start + per_class` of a seeded shuffle are written, so
    two calls with disjoint ranges give disjoint sets (e.g. training data and "new" images).
    The 8x8 images (0-16) are scaled to 0-255, drawn dark on light and upscaled to `size`.
    """
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    root = Path(root)
    for label in classes:
        members = rng.permutation(np.flatnonzero(digits.target == label))[start:start + per_class]
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in members:
            image = (255 - digits.images[index] * (255 / 16)).astype(np.uint8)
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(folder / f"{index:04d}.png"), image)
    return root
