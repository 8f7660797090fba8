"""Images to class probabilities: the path shared by classify and evaluate.

Images are decoded on a thread pool a couple of batches ahead of the network, so decoding
overlaps with compute while memory stays bounded whatever the number of files.
"""
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from . import weights as weights_io
from .errors import AlexftError
from .model import InferenceFunction, build_alexnet, fused_lrn_pays_off, onednn_is_on
from .pipeline import chunks, map_ahead
from .preprocess import find_images, image_views
from .progress import progress_bar
from .weights.sources import resolve_weights


@dataclass
class Predictor:
    """A model with its class names, ready to turn preprocessed views into probabilities."""

    model: object
    class_names: list
    preprocessing: object = None  # a preprocess.Preprocessing; None: alexft's recipe

    def __post_init__(self):
        self._softmax = InferenceFunction(self.model, tf.nn.softmax)

    def probabilities(self, views, fused_lrn=False):
        """(N, 227, 227, 3) float32 views -> (N, classes) softmax probabilities.

        `fused_lrn`: LRN as one XLA kernel, faster on large batches but compiled once per batch
        size (~0.3 s each on a CPU): for long runs of equal batches.
        """
        return self._softmax(views, fused_lrn).numpy()


def load_predictor(weights=None, download=True, progress=None, preprocessing=None):
    """Build the network and load `weights` (a path, or None for the default sources).
    `preprocessing`: a preprocess.Preprocessing (Caffe's mean image, float resizing)."""
    weight_set = weights_io.load(resolve_weights(weights, download=download, progress=progress))
    class_names = weights_io.class_names_for(weight_set)
    # The variables start from the file's arrays, which are released as they are copied.
    # Grouped layers as one op where oneDNN runs them: ~20% faster at batch 1 on AVX2 CPUs.
    model = build_alexnet(num_classes=weight_set.num_classes, initial=weight_set.params, groups_as_one_op=onednn_is_on())
    return Predictor(model, class_names, preprocessing)


def predict_views(predictor, paths, ten_crop=False, batch_size=32, progress=None, workers=None, fused_lrn=None):
    """Yield (path, per-view probabilities or None, error message or None) per image, in order.

    `paths`: an image or folder, or a list of them (folders give their images, sorted).

    Probabilities are (1, classes) for the centre crop, or (10, classes) for Caffe's ten crops
    in `oversample` order (the centre is view 4). The ten crops of a batch of images go
    through the network as one batch. A file that cannot be read yields its error; the run goes on.
    `fused_lrn`: whether full batches use the fused LRN (`Predictor.probabilities`); by default,
    runs of 512 views or more do.
    """
    paths = find_images(paths)  # one path or many; folders expand as on the command line
    views_per_image = 10 if ten_crop else 1
    if fused_lrn is None:
        fused_lrn = fused_lrn_pays_off(len(paths) * views_per_image)
    loaded = map_ahead(lambda path: _load(path, ten_crop, predictor.preprocessing), paths, workers, ahead=2 * batch_size)
    with progress_bar(len(paths), progress, minimum=8, unit="img") as bar:
        for chunk in chunks(loaded, batch_size):
            good = [views for _, views, _ in chunk if views is not None]
            if good:
                full = len(good) == batch_size  # one batch shape, one compile
                probabilities = predictor.probabilities(np.concatenate(good), fused_lrn=fused_lrn and full)
                per_image = iter(probabilities.reshape(len(good), views_per_image, -1))
            for path, views, error in chunk:
                yield path, (next(per_image) if views is not None else None), error
            bar.update(len(chunk))


def predict_files(predictor, paths, ten_crop=False, batch_size=32, progress=None, workers=None):
    """Yield (path, probabilities or None, error message or None) per path, in order.

    With `ten_crop` the softmax outputs of Caffe's ten crops are averaged.
    """
    for path, views, error in predict_views(predictor, paths, ten_crop, batch_size, progress, workers):
        yield path, (views.mean(axis=0) if views is not None else None), error


def top_k(probabilities, class_names, k=5):
    """The k most probable classes as [{"index", "label", "probability"}], most probable first."""
    k = min(k, len(probabilities))
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"index": int(index), "label": class_names[index], "probability": float(probabilities[index])}
        for index in order
    ]


def classify(predictor, paths, top=5, ten_crop=False, batch_size=32, progress=None):
    """Yield one result dict per image: {"path", "predictions"} or {"path", "error"}."""
    for path, probabilities, error in predict_files(predictor, paths, ten_crop, batch_size, progress):
        if error is not None:
            yield {"path": str(path), "error": error}
        else:
            yield {"path": str(path), "predictions": top_k(probabilities, predictor.class_names, top)}


def _load(path, ten_crop, preprocessing=None):
    try:
        return path, image_views(path, ten_crop, preprocessing), None
    except AlexftError as error:
        return path, None, str(error)
