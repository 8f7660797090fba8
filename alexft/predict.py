"""Images to class probabilities: the path shared by classify and evaluate.

Images are decoded on a thread pool a couple of batches ahead of the network, so decoding
overlaps with compute while memory stays bounded whatever the number of files.

TensorFlow is imported by `Predictor` only: the same loop runs `fast_start.LitePredictor`,
which answers short classify calls on LiteRT without it.
"""
import logging
import os
from dataclasses import dataclass

import numpy as np

from . import weights as weights_io
from .architecture import INPUT_SIZE
from .errors import AlexftError
from .pipeline import check_count, check_flags, chunks, map_ahead
from .preprocess import damage_said, find_images, image_views, warn_user
from .progress import progress_bar
from .train_options import OptionsError
from .weights.sources import resolve_weights
from .python_words import keywords_hinted

log = logging.getLogger(__name__)


@dataclass
class Predictor:
    """A model with its class names, ready to turn preprocessed views into probabilities. The
    model gives logits (`build_alexnet`), which go through a softmax, or scores of its own last
    activation (`alexft.AlexNet`'s softmax, or a sigmoid of yours), which are taken as they are."""

    model: object
    class_names: list = None  # None: the model's own (alexft.AlexNet's keep them), else the default ones
    preprocessing: object = None  # a preprocess.Preprocessing; None: alexft's recipe

    def __post_init__(self):
        import tensorflow as tf

        from .model import InferenceFunction

        if self.class_names is None:
            self.class_names = _model_class_names(self.model)
        self._softmax = InferenceFunction(self.model, tf.nn.softmax if _gives_logits(self.model) else None)

    def probabilities(self, views, fused_lrn=False):
        """(N, 227, 227, 3) float32 views -> (N, classes) softmax probabilities.

        `fused_lrn`: LRN as one XLA kernel, faster on large batches but compiled once per batch
        size (~0.3 s each on a CPU): for long runs of equal batches.
        """
        if check_views(views) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return self._softmax(views, fused_lrn).numpy()


def _last_layers(model):
    """The model's last layer, and the last layer of that, down through models inside models
    (alexft.AlexNet's model inside one of the user's)."""
    while getattr(model, "layers", None):
        model = model.layers[-1]
        yield model


def _gives_logits(model):
    """Whether a Keras model gives logits: its last layer, or the last layer of a model it ends
    with, has no activation or a linear one. A Softmax layer, or an activation of any other
    kind (an Activation's or a Dense's: softmax, sigmoid), gives its own scores: a softmax on
    a sigmoid's had made scores of a multi-label model sum to 1."""
    import keras

    last = next(reversed(list(_last_layers(model))), None)
    if isinstance(last, keras.layers.Softmax):
        return False
    return getattr(getattr(last, "activation", None), "__name__", "linear") == "linear"


def _model_class_names(model):
    """A Keras model's class names: its own, or those of the model it ends with (alexft.AlexNet's
    keep them, also through a .keras file), when they fit its output; else the default ones."""
    count = model.output_shape[-1]
    own = getattr(model, "class_names", None)
    if own is not None and len(own) != count:  # set by hand (a clone's): not taken, and said
        warn_user(f"model.class_names holds {len(own)} names for the model's {count} outputs: not used")
    for holder in [model, *_last_layers(model)]:
        names = getattr(holder, "class_names", None)
        if names is not None and len(names) == count:
            return list(names)
    return weights_io.default_class_names(count)


def as_predictor(model):
    """A Predictor, or a Keras model with alexft's input (e.g. `alexft.AlexNet`'s, or one loaded
    from a .keras file) wrapped in one, with the model's class names."""
    if hasattr(model, "layers") and hasattr(model, "output_shape"):
        return Predictor(model)
    if hasattr(model, "probabilities") and hasattr(model, "class_names"):
        return model  # a Predictor, a LitePredictor, or anything else with them
    raise TypeError(not_a_predictor(model))


def not_a_predictor(model):
    """The refusal of what is not a predictor, with the way from a weights file given instead."""
    said = f"expected a Predictor (alexft.load_predictor) or an alexft Keras model, got {type(model).__name__}"
    if isinstance(model, (str, os.PathLike)):
        said += f" {str(model)!r}: load the weights first, alexft.load_predictor({str(model)!r})"
    return said


def check_views(views):
    """What the network takes, said plainly: a tf.function's own refusal of raw pixels is pages long.
    Returns the number of views: none (an empty batch, as a filtered list may leave) has no
    network call to make, and the predictors answer it with (0, classes)."""
    if isinstance(views, (list, tuple)):
        raise TypeError(f"the network takes one array of views, float (N, {INPUT_SIZE}, {INPUT_SIZE}, 3); got a "
                        f"{type(views).__name__} of {len(views)}: np.stack(views) makes one")
    shape, dtype = tuple(getattr(views, "shape", ())), str(getattr(views, "dtype", type(views).__name__))
    if shape == (INPUT_SIZE, INPUT_SIZE, 3) and "float" in dtype:  # preprocess_input's answer for one image
        raise ValueError(f"the network takes a batch of views, (N, {INPUT_SIZE}, {INPUT_SIZE}, 3); got one view, "
                         f"{shape}: add the batch axis (views[np.newaxis])")
    if len(shape) != 4 or tuple(shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3) or "float" not in dtype:
        raise ValueError(f"the network takes preprocessed views, float (N, {INPUT_SIZE}, {INPUT_SIZE}, 3); got {dtype} "
                         f"{shape}: prepare images with alexft.preprocess_input (arrays) or alexft.image_views (files)")
    return shape[0]


def check_top(top, name="top"):
    """A count of classes to show: a whole number of at least 1 (a list cut at 0 or -1 is a mistake)."""
    check_count(top, name)


RUNTIMES = ("tensorflow", "openvino")


@keywords_hinted
def load_predictor(weights=None, download=True, progress=None, preprocessing=None, precision="float32",
                   runtime="tensorflow"):
    """Build the network and load `weights` (a path, a WeightSet already read, which stays as it
    was (`WeightSet.handed_over`), or None for the default sources).
    `preprocessing`: a preprocess.Preprocessing (Caffe's mean image, float resizing).
    `precision`: "float32", or "bfloat16" (weights held and computed in bfloat16, logits and
    probabilities in float32; see `model_dtype`).
    `runtime`: "tensorflow", the reference, or "openvino" (OpenVINO's CPU plugin, where it is
    installed: faster at small batches, without TensorFlow's start-up; openvino_runtime.py)."""
    if runtime not in RUNTIMES:
        litert = " (LiteRT's copy: alexft.load_litert_predictor)" if str(runtime).lower() in ("litert", "tflite") else ""
        raise OptionsError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}{litert}")
    check_precision(precision)  # before the weights are read: a mistaken option is said at once
    if not isinstance(weights, weights_io.WeightSet):
        weights = resolve_weights(weights, download=download, progress=progress)
    weight_set = weights_io.as_weight_set(weights)
    class_names = weights_io.class_names_for(weight_set)
    if runtime == "openvino":
        from .openvino_runtime import OpenVinoPredictor

        return OpenVinoPredictor(weight_set.params, class_names, preprocessing, precision)
    return Predictor(inference_network(weight_set, precision), class_names, preprocessing)


def inference_network(weight_set, precision="float32", last="fc8"):
    """AlexNet on TensorFlow, its variables started from a checked WeightSet, up to `last`: to fc8
    the logits (`load_predictor`'s network); below it that layer's activations, for which a set
    without the layers above (a feature extractor's) serves. `precision` as in `load_predictor`."""
    from .architecture import IMAGENET_CLASSES
    from .model import Kernels, build_alexnet, onednn_is_on

    # The variables start from the file's arrays, taken without a copy when the set was read here.
    # Grouped layers as one op where oneDNN runs them: ~20% faster at batch 1 on AVX2 CPUs.
    return build_alexnet(num_classes=weight_set.num_classes or IMAGENET_CLASSES,  # (no fc8: unused below it)
                         initial=weight_set.initial_arrays(), dtype=model_dtype(precision),
                         kernels=Kernels(groups_as_one_op=onednn_is_on()), last=last)


PRECISIONS = ("float32", "bfloat16")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise OptionsError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def model_dtype(precision):
    """The Keras dtype for an inference `precision`: "float32", whatever the global policy a
    user set for their own model (keras.mixed_precision), or "bfloat16": the weights
    are converted once and held in bfloat16 (half the memory; not cast on every call, as
    Keras' mixed_bfloat16 policy does), for CPUs with AVX512_BF16 or AMX, and GPUs. Elsewhere
    TensorFlow emulates it, slower than float32: said in a warning."""
    check_precision(precision)
    if precision == "float32":
        return "float32"
    import tensorflow as tf

    from .cpu_features import cpu_has_bfloat16

    if cpu_has_bfloat16() is False and not tf.config.list_physical_devices("GPU"):
        log.warning("this CPU has no bfloat16 instructions (AVX512_BF16 or AMX): bfloat16 is emulated here, "
                    "slower than float32")
    return "bfloat16"


def predict_views(predictor, paths, ten_crop=False, batch_size=32, progress=None, workers=None, fused_lrn=None,
                  desc="classify"):
    """Yield (path, per-view probabilities or None, error message or None) per image, in order.

    `paths`: an image or folder, or a list of them (folders give their images, sorted).

    Probabilities are (1, classes) for the centre crop, or (10, classes) for Caffe's ten crops
    in `oversample` order (the centre is view 4). The ten crops of a batch of images go
    through the network as one batch. A file that cannot be read yields its error; the run goes on.
    `fused_lrn`: whether full batches use the fused LRN (`Predictor.probabilities`); by default,
    runs of 512 views or more do. `desc`: the progress bar's label.
    """
    check_flags(ten_crop=ten_crop)
    predictor = as_predictor(predictor)
    paths = find_images(paths, say=warn_user)  # one path or many; folders expand as on the command line
    views_per_image = 10 if ten_crop else 1
    if fused_lrn is None:
        fused_lrn = isinstance(predictor, Predictor) and _fused_lrn_pays_off(len(paths) * views_per_image)
    loaded = map_ahead(lambda path: _load(path, ten_crop, predictor.preprocessing), paths, workers, ahead=2 * batch_size)
    with progress_bar(len(paths), progress, minimum=8, unit="img", desc=desc) as bar:
        for chunk in chunks(loaded, batch_size):
            good = [views for _, views, _ in chunk if views is not None]
            if good:
                full = len(good) == batch_size  # one batch shape, one compile
                probabilities = predictor.probabilities(np.concatenate(good), fused_lrn=fused_lrn and full)
                per_image = iter(probabilities.reshape(len(good), views_per_image, -1))
            bar.update(len(chunk))  # before the chunk's results are printed: a bar behind them read 0% under 32 lines
            for path, views, error in chunk:
                yield path, (next(per_image) if views is not None else None), error


@keywords_hinted
def predict_files(predictor, paths, ten_crop=False, batch_size=32, progress=None, workers=None):
    """Yield (path, probabilities or None, error message or None) per path, in order.

    With `ten_crop` the softmax outputs of Caffe's ten crops are averaged.
    """
    for path, views, error in predict_views(predictor, paths, ten_crop, batch_size, progress, workers):
        yield path, (views.mean(axis=0) if views is not None else None), error


def top_k(probabilities, class_names, k=5):
    """The k most probable classes of one image's `probabilities` (classes,) as
    [{"index", "label", "probability"}], most probable first."""
    check_top(k, "k")
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 1:
        raise ValueError(f"top_k takes one image's probabilities, shaped (classes,); got {probabilities.shape}: "
                         "call it on each row")
    if len(class_names) != len(probabilities):
        raise ValueError(f"top_k got {len(probabilities)} probabilities and {len(class_names)} class names; give the "
                         "names of the model's own classes (predictor.class_names)")
    k = min(int(k), len(probabilities))
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"index": int(index), "label": class_names[index], "probability": float(probabilities[index])}
        for index in order
    ]


@keywords_hinted
def classify(predictor, paths, top=5, ten_crop=False, batch_size=32, progress=None):
    """Yield one result dict per image: {"path", "predictions"} or {"path", "error"}. A `top`
    below 1 is refused at the call, not when the results are first asked for."""
    check_top(top)
    check_count(batch_size, "batch_size")
    check_flags(ten_crop=ten_crop)
    return _classified(as_predictor(predictor), paths, top, ten_crop, batch_size, progress)


def _classified(predictor, paths, top, ten_crop, batch_size, progress):
    for path, probabilities, error in predict_files(predictor, paths, ten_crop, batch_size, progress):
        if error is not None:
            yield {"path": str(path), "error": error}
        else:
            result = {"path": str(path), "predictions": top_k(probabilities, predictor.class_names, top)}
            damage = damage_said(path)
            yield dict(result, warning=damage) if damage else result


def _fused_lrn_pays_off(views):
    from .model import fused_lrn_pays_off

    return fused_lrn_pays_off(views)


def _load(path, ten_crop, preprocessing=None):
    try:
        return path, image_views(path, ten_crop, preprocessing), None
    except AlexftError as error:
        return path, None, str(error)
