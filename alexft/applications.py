"""AlexNet the way `keras.applications` offers its networks: one call for a model with weights,
`preprocess_input` for the images Keras users hold, `decode_predictions` for the output.

Where alexft differs from keras.applications, on purpose:
- `preprocess_input` takes RGB images of any size and does all of Caffe's pipeline (resize to
  256x256, BGR, ImageNet mean, centre 227x227 crop): exactly what `alexft classify` does, so a
  model given its output agrees with the command line to the last bit;
- the layers keep the weights file's names (conv1..fc8), and the classifier's activation is a
  layer of its own ("prob", Caffe's name, or "logits" without one);
- `classes` defaults to what the weights file holds (a fine-tuned file has its own count).
"""
import difflib
import numbers
import os
import warnings

import numpy as np

from . import architecture as arch
from . import imagenet
from .errors import AlexftWarning
from .predict import check_top
from .preprocess import CROP, center_crop, is_tensor, resize_and_subtract_mean
from .python_words import keywords_hinted

IMAGENET = "imagenet"
POOLINGS = (None, "avg", "max")


@keywords_hinted
def AlexNet(weights=IMAGENET, include_top=True, classes=None, pooling=None, classifier_activation="softmax",
            input_tensor=None, input_shape=None, last_layer=None, name="alexnet", progress=None):  # noqa: N802 (Keras' name)
    """AlexNet as a Keras model, with `weights`:

    - "imagenet": Caffe's bvlc_alexnet, found or downloaded as `alexft classify` does;
    - a path to any weights file alexft reads (.npy, .npz, .caffemodel), e.g. a fine-tuned model.npz,
      or a WeightSet read from one (`alexft.load_weights`);
    - None: Caffe's random initialisation.

    `include_top=False` ends at pool5, or at `last_layer` (any layer, e.g. "conv5" or "fc7"), and
    then takes `pooling` ("avg" or "max": global pooling of a convolutional output) and any
    `input_shape` of at least 67x67 (without fc6, no size is fixed). With the top, the input is
    227x227x3 and the output the class scores after `classifier_activation` ("softmax", None for
    logits, or any Keras activation). Inputs are what `preprocess_input` returns.

    `classes`: fc8's outputs, by default what the weights file holds (1000 for ImageNet's and for
    `weights=None`); another count needs weights without fc8, or none.
    `input_tensor`: a Keras tensor to build on (e.g. `preprocess_input(keras.Input((None, None, 3),
    dtype="uint8"))`, the preprocessing inside the model). `name`: the model's. `progress`: a
    progress bar for a download, as the commands' --progress (None: on a terminal).
    """
    # Every check that needs no weights comes first: a mistake is said at once, not after the
    # weights are looked for (or 233 MB downloaded, or a download failing offline), nor after
    # TensorFlow's start-up where it can.
    classes = _checked_classes(classes)
    last = _last_layer(include_top, last_layer, pooling, classes)
    _warn_of_unused(pooling=pooling if include_top else None, classes=classes if last != "fc8" else None)
    input_shape = _input_shape(input_tensor, input_shape, include_top, last)
    if include_top and classifier_activation not in (None, "softmax"):  # a name only Keras knows, checked first
        import keras

        keras.activations.get(classifier_activation)
    weight_set = _weight_set(weights, include_top, last, progress)  # a missing file is said before Keras' start-up
    classes = _class_count(weight_set, classes, include_top)
    import keras

    from .model import alexnet_layers

    activation = keras.activations.get(classifier_activation) if include_top else None
    inputs = _input(keras, input_tensor, input_shape)
    x = alexnet_layers(inputs, classes, last=last, initial=weight_set.initial_arrays() if weight_set else None)
    if not include_top and pooling:
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        x = pool(data_format="channels_last", name=f"{pooling}_pool")(x)  # (whatever keras.config's image_data_format)
    if include_top:
        x = keras.layers.Activation(activation, dtype="float32",
                                    name="logits" if classifier_activation is None else "prob")(x)
    source = inputs if input_tensor is None else keras.utils.get_source_inputs(input_tensor)
    if isinstance(source, list) and len(source) == 1:  # a model of one input, not of a list of one: served as such
        source = source[0]
    # Names only for class scores. One model class whatever the weights: Keras' .weights.h5 files
    # key a nested model by its class, so a model rebuilt with weights=None must be the same class
    # to load_weights() saved from one built on a file that names its classes.
    class_names = weight_set.class_names if weight_set is not None and include_top else None
    from .layers import ClassifierModel

    return ClassifierModel(source, x, name=name, class_names=class_names)  # for decode_predictions, kept when saved


def _last_layer(include_top, last_layer, pooling, classes):
    """The layer the model ends at, checked with the pooling it takes."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of None, 'avg', 'max'; got {pooling!r}")
    if last_layer is not None and last_layer not in arch.ENDS:
        raise ValueError(f"AlexNet has no layer {last_layer!r}; a model may end at {', '.join(arch.ENDS)}")
    if include_top and last_layer not in (None, "fc8"):
        raise ValueError(f"last_layer={last_layer!r} needs include_top=False")
    last = "fc8" if include_top else (last_layer or "pool5")
    layer = arch.LAYERS.get(last)
    if not include_top and pooling and isinstance(layer, arch.Dense):  # a flat vector: nothing to pool
        raise ValueError(f"pooling={pooling!r} needs a convolutional output; {last} is "
                         f"({layer.outputs or classes or 'classes'},)")
    return last


def _weight_set(weights, include_top, last, progress):
    if weights is None:
        return None
    from . import weights as weights_io
    from .weights.sources import names_the_defaults, resolve_weights

    if isinstance(weights, weights_io.WeightSet):  # read already (alexft.weights.load, export)
        return weights
    if names_the_defaults(weights):  # ("ImageNet" too)
        path = resolve_weights(None, progress=progress)
    elif isinstance(weights, (str, os.PathLike)):
        _check_spelling(weights)
        path = resolve_weights(weights, download=False)
    else:
        raise TypeError(f"weights must be 'imagenet', a path, a WeightSet or None; got {type(weights).__name__}"
                        + (" (a Keras model: alexft.weights_from_model(model) gives its WeightSet)"
                           if hasattr(weights, "get_layer") else ""))
    return weights_io.as_weight_set(path, skip=weights_io.layers_above(last))  # (this model's own)


def _check_spelling(weights):
    """"imagnet" was looked for as a file; a bare word near "imagenet" that names no file is a typo."""
    word = str(weights)
    if (not os.path.exists(word) and not any(mark in word for mark in "./\\")
            and difflib.get_close_matches(word.lower(), [IMAGENET], cutoff=0.75)):
        raise ValueError(f"weights={word!r}: no such file; did you mean {IMAGENET!r}?")


def _warn_of_unused(pooling, classes):
    """keras.applications ignores these in silence; a model built otherwise than asked is said."""
    if pooling:
        warnings.warn(f"AlexNet: pooling={pooling!r} is not used: with include_top=True the output is the class "
                      "scores; pooling applies to include_top=False", AlexftWarning, stacklevel=3)
    if classes is not None:
        warnings.warn(f"AlexNet: classes={classes!r} is not used: it sizes fc8, which this model leaves out; give "
                      "your own head that many outputs", AlexftWarning, stacklevel=3)


def _checked_classes(classes):
    if classes is None:
        return None
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral):  # (a wrong type: Python's TypeError)
        raise TypeError(f"classes must be a positive whole number; got {classes!r}")
    if classes < 1:
        raise ValueError(f"classes must be a positive whole number; got {classes!r}")
    return int(classes)  # (numpy's integers, as len(np.unique(labels)) gives, are not JSON in a saved model)


def _class_count(weight_set, classes, include_top):
    held = weight_set.num_classes if weight_set is not None and "fc8" in weight_set.params else None
    if classes is None:
        return held or arch.IMAGENET_CLASSES
    if include_top and held is not None and classes != held:
        raise ValueError(f"the weights {weight_set.path} have {held} classes, not {classes}: leave classes unset, "
                         "or use include_top=False and a head of your own")
    return classes


def _input_shape(input_tensor, input_shape, include_top, last):
    """The shape of one input image, (height, width, 3), checked with the input tensor's dtype."""
    size = arch.INPUT_SIZE
    _check_input_dtype(input_tensor)
    if input_shape is None:
        input_shape = (size, size, 3) if input_tensor is None else tuple(input_tensor.shape[1:])
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3); got {input_shape}")
    if include_top and input_shape != (size, size, 3):
        raise ValueError(f"with include_top=True the input is ({size}, {size}, 3); got {input_shape}")
    if last.startswith("fc") and input_shape != (size, size, 3):  # fc6's weights take pool5's 6x6x256 only
        raise ValueError(f"a model up to {last} takes ({size}, {size}, 3) inputs (fc6 is fixed to pool5's 6x6x256); "
                         f"got {input_shape}: end at pool5 or a convolution for other sizes")
    if any(side is not None and side < 67 for side in input_shape[:2]):
        raise ValueError(f"input_shape {input_shape}: AlexNet needs at least 67x67 pixels")
    return input_shape


def _check_input_dtype(input_tensor):
    """Integer pixels built a model that failed only when run, deep in TensorFlow ("GroupedConv2D.call():
    ... DataType uint8 not in list of allowed values"). (input_shape carries no dtype: Keras' float.)"""
    dtype = getattr(input_tensor, "dtype", None)
    name = str(getattr(dtype, "name", dtype))  # (a KerasTensor's dtype is a str, a tf.Tensor's a DType)
    if dtype is not None and "float" not in name:
        raise ValueError(f"input_tensor is {name}: AlexNet takes float32 images as preprocess_input returns them; for "
                         "raw uint8 images put the preprocessing in the model, input_tensor=alexft.preprocess_input("
                         "keras.Input((None, None, 3), dtype=\"uint8\")) (an alexft.CaffePreprocessing layer)")


def _input(keras, input_tensor, input_shape):
    if input_tensor is None:
        return keras.Input(input_shape, name="image")
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.Input(tensor=input_tensor, shape=input_shape, name="image")
    return input_tensor


def preprocess_input(x, data_format=None):
    """RGB images -> AlexNet's inputs, exactly as `alexft classify` prepares a file's pixels.

    `x`: one image (H, W, 3), a batch (N, H, W, 3) or a list of images of different sizes;
    uint8 or float in 0-255 (floats are rounded to 8 bits, as an image file holds them), or
    uint16 in 0-65535 (16-bit images, scaled to 8 bits as OpenCV reads a 16-bit file); a numpy
    array or a tensor (also a symbolic one, e.g. in `tf.data.Dataset.map`, and a ragged batch of
    images of different sizes, as `Dataset.ragged_batch` makes). Grey images, (H, W)
    or (..., 1), are tiled to RGB and alpha, (..., 2) or (..., 4), is dropped, as for files. Returns
    float32 (227, 227, 3) or (N, 227, 227, 3): resized to 256x256 (bilinear, aspect ratio ignored),
    BGR, ImageNet's mean pixel subtracted, centre crop. Unlike keras.applications' preprocess_input
    it resizes and crops, and it returns a new array. Pixels within 0-1, below 0 (preprocessed
    already) or above 255 are warned of; NaN is refused. `data_format` is Keras' argument: alexft's
    models take "channels_last" only.

    A Keras tensor (`keras.Input((None, None, 3))`, a model's input) gets a `CaffePreprocessing`
    layer instead: TensorFlow ops only, so the model saves, exports and serves without Python,
    within a grey level of OpenCV's resize on some pixels; it takes 8-bit images (uint8 or 0-255
    floats; RGB, grey, grey and alpha, or RGBA). So does a tensor traced in a `tf.function` or a
    Keras `Lambda` layer, which may be saved (and loads after `import alexft`). Arrays, eager
    tensors and `Dataset.map`'s tensors go through OpenCV, exactly (a `tf.numpy_function`, which a
    saved model could not serve).
    """
    if data_format is not None and not isinstance(data_format, str):  # dataset.map(preprocess_input) on (image, label)
        raise TypeError(f"preprocess_input: data_format is None or 'channels_last', not {type(data_format).__name__}; "
                        "on a dataset of (images, labels): dataset.map(lambda x, y: (alexft.preprocess_input(x), y))")
    if data_format not in (None, "channels_last"):
        raise ValueError(f"preprocess_input: data_format {data_format!r}: alexft's models take channels_last "
                         "images, (N, H, W, 3)")
    if isinstance(x, (str, os.PathLike)) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], (str, os.PathLike))):
        raise TypeError("preprocess_input takes pixels (arrays, tensors, PIL images), not file names: for files use "
                        "alexft.image_views(path), which reads and prepares them the same way")
    if x is None or isinstance(x, (bytes, bytearray, memoryview)):
        raise TypeError("preprocess_input takes pixels (arrays, tensors, PIL images), not "
                        + ("None" if x is None else "an image file's encoded bytes: decode them first (e.g. "
                           "PIL.Image.open(io.BytesIO(data))), or give the file to alexft.image_views(path)"))
    if isinstance(x, np.ndarray) and x.dtype == object and x.ndim == 1:  # images of different sizes, as numpy holds them
        x = list(x)
    if _is_keras_tensor(x):  # a model's input: TF ops only, so the model saves, exports and serves
        from .preprocessing_layer import CaffePreprocessing

        _check_model_input(x)
        return CaffePreprocessing()(x)
    if is_tensor(x):
        return _preprocess_tensor(x)
    if _is_list_of_images(x):  # photos as they come: each its own size, grey or colour
        views = []
        for image in x:  # not a comprehension: its frame would take the warnings' stacklevel
            views.append(_preprocess_array(_pixels(image)))
        return np.stack(views)
    return _preprocess_array(_pixels(x))


def register_with_keras():
    """Keras saves the function of a `Lambda` layer by its registered name and finds it again by
    that name only ("preprocess_input", unregistered, needed custom_objects to load). Called
    once Keras is imported (alexft/__init__.py): `import alexft` does not import it."""
    import keras

    from .layers import PACKAGE

    keras.saving.register_keras_serializable(PACKAGE)(preprocess_input)  # as "alexft>preprocess_input"


def _pixels(x):
    """An array of `x`; a PIL image whose pixels are not grey or RGB levels (a palette's indices,
    CMYK, HSV...) is converted to RGB(A) first, as reading its file would."""
    mode = getattr(x, "mode", None)
    if mode is not None and hasattr(x, "convert") and mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B"):
        x = x.convert("RGBA" if mode in ("P", "PA") and ("transparency" in x.info or mode == "PA") else "RGB")
    return np.asarray(x)


def _is_list_of_images(x):
    """A list of arrays (or tensors, PIL images), or of nested lists of different sizes; one
    image as nested lists (`image.tolist()`, a JSON request) is one array, as it always was."""
    if not isinstance(x, (list, tuple)) or not x:
        return False
    if all(hasattr(item, "shape") or hasattr(item, "__array_interface__") for item in x):
        return True
    return len({np.shape(item) for item in x}) > 1


def _check_model_input(x):
    """The in-graph layer takes 8-bit RGB or 0-255 floats; anything else would be clipped or fail
    deep inside TensorFlow."""
    dtype = str(getattr(x.dtype, "name", x.dtype))
    shape = tuple(x.shape)
    channels = shape[-1]  # None: not known until called
    if len(shape) >= 3 and channels is None and shape[-3] in (1, 3, 4):  # keras.Input((3, None, None))
        cause = "channels first? the model takes channels last, keras.Input((None, None, 3))"
    elif channels not in (1, 2, 3, 4, None):
        cause = f"{channels} channels; an image has 3 (or 1, 2, 4)"
    elif dtype in ("uint16", "uint32", "uint64"):
        cause = "give the model 8-bit images (decode 16-bit ones to 8 bits first)"
    else:
        return
    raise ValueError(f"preprocess_input on a model's input takes RGB images, (..., 3) (grey, grey and alpha, or "
                     f"RGBA too), of 0-255 grey levels; got {dtype} {shape}: {cause}")


def _is_keras_tensor(x):
    return type(x).__name__ == "KerasTensor"


def _preprocess_array(x):
    x = _as_rgb(x)
    if 0 in x.shape[-3:-1]:
        raise ValueError(f"preprocess_input: an image of no pixels, shaped {x.shape}")
    if x.dtype.kind == "u" and x.dtype.itemsize == 2:  # also big-endian, as FITS and some TIFF readers give
        _warn_of_8_bit_levels_in_16_bits(x)
        x = (x.astype(np.uint16) >> 8).astype(np.uint8)  # OpenCV's IMREAD_COLOR on a 16-bit file, bit for bit
    elif x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"preprocess_input takes uint8, uint16 or float pixels; got {x.dtype}")
        _warn_of_unlikely_pixels(x)
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    images = x if x.ndim == 4 else x[np.newaxis]
    views = np.empty((len(images), CROP, CROP, 3), np.float32)
    for index, rgb in enumerate(images):
        views[index] = center_crop(resize_and_subtract_mean(np.ascontiguousarray(rgb[:, :, ::-1])))
    return views if x.ndim == 4 else views[0]


def _as_rgb(x):
    """Grey (H, W) or (..., 1) tiled, alpha ((..., 2) or RGBA) dropped: what reading such a file gives."""
    if x.ndim == 2:
        x = x[:, :, np.newaxis]
    if x.ndim not in (3, 4) or x.shape[-1] not in (1, 2, 3, 4):
        raise _not_an_image_shape(x.shape)
    if x.shape[-1] in (1, 2):  # grey, or grey and alpha
        return np.repeat(x[..., :1], 3, axis=-1)
    return x[..., :3]


def _not_an_image_shape(shape):
    hints = []
    channels_first = f"channels first? alexft takes channels last, x.transpose({'1, 2, 0' if len(shape) == 3 else '0, 2, 3, 1'})"
    grey_batch = "grey images in a batch need a channel axis, x[..., np.newaxis]"
    if len(shape) == 4 and shape[1] in (1, 3, 4):
        hints.append(channels_first)
    elif len(shape) == 3 and shape[0] in (1, 3):  # (C, H, W), as PyTorch holds an image; or three grey images
        hints += [channels_first] + ([grey_batch] if shape[0] == 3 else [])
    elif len(shape) == 3 and shape[-1] < min(shape[:2]) and shape[-1] <= 16:  # (H, W, C): a multispectral image
        hints.append(f"{shape[-1]} channels; an image has 3 (or 1, 2, 4)")
    elif len(shape) == 3:  # (N, H, W); four first is more often four grey images than RGBA channels first
        hints += [grey_batch, channels_first] if shape[0] == 4 else [grey_batch]
    hint = "".join(f"; {said}" if index else f": {said}" for index, said in enumerate(hints))
    return ValueError(f"preprocess_input takes RGB images shaped (H, W, 3) or (N, H, W, 3) (or grey (H, W), "
                      f"(..., 1), grey and alpha (..., 2), RGBA (..., 4)); got {shape}{hint}")


def _warn_of_8_bit_levels_in_16_bits(x):
    high = x.max(initial=0)
    if 0 < high <= 255:
        warnings.warn(f"preprocess_input: uint16 pixels, all up to {high}: uint16 is read as 16-bit levels "
                      "(0-65535), which makes these near black; pass 8-bit grey levels as uint8", AlexftWarning, stacklevel=4)


def _warn_of_unlikely_pixels(x):
    """Pixels that are not 0-255 grey levels would be rounded into a wrong but plausible image."""
    if not x.size:
        return
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError("preprocess_input: the images hold NaN or infinite pixels")
    low, high = x.min(), x.max()
    if low < 0:
        warnings.warn(f"preprocess_input: pixels down to {low:.4g}, below 0: preprocessed already? It takes RGB grey "
                      "levels 0-255, and clips these to 0 (right for the overshoot of a bicubic or lanczos resize)",
                      AlexftWarning, stacklevel=4)
    elif high > 255:
        warnings.warn(f"preprocess_input: pixels up to {high:.6g}, above 255: it takes grey levels 0-255 and clips "
                      "these to 255 (16-bit images: pass them as uint16)", AlexftWarning, stacklevel=4)
    elif 0 < high <= 1 and np.issubdtype(x.dtype, np.floating):
        warnings.warn("preprocess_input: every pixel is within 0-1; it takes grey levels 0-255 (multiply by 255), "
                      "and rounds these to 0 and 1", AlexftWarning, stacklevel=4)


def _preprocess_tensor(x):
    import tensorflow as tf

    if isinstance(x, tf.RaggedTensor):  # images of different sizes batched (Dataset.ragged_batch): one at a time
        if not (x.shape.rank == 4 or (x.shape.rank == 3 and x.shape[-1] is None)):  # colour, or grey (tiled)
            raise ValueError(f"preprocess_input takes a ragged batch of images shaped (N, None, None, 3), or (N, None, "
                             f"None) for grey ones; got {x.shape}")
        return tf.map_fn(lambda image: _preprocess_tensor(image.to_tensor() if isinstance(image, tf.RaggedTensor) else image),
                         x, fn_output_signature=tf.TensorSpec([CROP, CROP, 3], tf.float32))
    rank = x.shape.rank
    if rank is None:  # tf.io.decode_image's default: a GIF could be a stack of frames
        raise ValueError("preprocess_input needs to know whether it has one image or a batch, and got a tensor of "
                         "unknown rank: decode with tf.io.decode_image(data, channels=3, expand_animations=False) "
                         "(or tf.io.decode_jpeg / decode_png)")
    if rank not in (2, 3, 4):
        raise ValueError(f"preprocess_input takes RGB images shaped (H, W, 3) or (N, H, W, 3) (or grey (H, W)); "
                         f"got {x.shape}")
    if x.shape[-1] is not None and rank > 2 and x.shape[-1] not in (1, 2, 3, 4):  # said now, not when read
        raise _not_an_image_shape(tuple(x.shape))
    if _in_a_graph_that_may_be_saved():
        return _preprocess_in_graph(x, tf)
    views = tf.numpy_function(_preprocess_array, [x], tf.float32, stateful=False)
    views.set_shape(x.shape[:-3].concatenate([CROP, CROP, 3]) if rank > 2 else [CROP, CROP, 3])
    return views


def _in_a_graph_that_may_be_saved():
    """True when traced in a tf.function or a Keras layer's call (a Lambda), not for tf.data: a
    `tf.numpy_function` there runs in the process that traced it, but a SavedModel of it fails
    when served ("Could not find callback with key=pyfunc_4"), so TensorFlow ops are used. tf.data
    traces its functions in graphs named Dataset_map_..., which are never saved."""
    import tensorflow as tf

    if tf.executing_eagerly():
        return False
    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        if getattr(graph, "name", "").startswith("Dataset_"):
            return False
        graph = getattr(graph, "outer_graph", None)
    return True


def _preprocess_in_graph(x, tf):
    """CaffePreprocessing's TensorFlow ops (within a grey level of OpenCV's resize on some pixels),
    for the inputs preprocess_input takes: grey (H, W) images get their channel, 16-bit ones are
    scaled to 8 bits as OpenCV reads a 16-bit file."""
    from .preprocessing_layer import caffe_views

    if x.shape.rank == 2:
        x = x[..., tf.newaxis]
    if x.dtype == tf.uint16:
        x = tf.cast(tf.bitwise.right_shift(x, 8), tf.uint8)
    return caffe_views(x)


def decode_predictions(preds, top=5, class_names=None):
    """The `top` classes of each row of `preds` (N, classes), most probable first, as
    `[[(class_id, name, score), ...], ...]` like keras.applications'. For ImageNet's 1000
    classes the id is the WordNet id (e.g. "n02123045") and the name Caffe's; for other models
    pass `class_names` (e.g. `alexft.load_weights(path).class_names`, or a fine-tuned model's
    `model.class_names`), and the id is the class index.
    """
    scores = np.asarray(preds)
    if not np.issubdtype(scores.dtype, np.number):  # a dict, strings: np.asarray makes an object array
        raise ValueError(f"decode_predictions expects a batch of scores shaped (N, classes); got a {type(preds).__name__}")
    if scores.ndim != 2:
        raise ValueError(f"decode_predictions expects a batch of scores shaped (N, classes); got shape {scores.shape}")
    preds = scores
    count = preds.shape[1]
    if class_names is None:
        if count != arch.IMAGENET_CLASSES:
            raise ValueError(f"{count} classes: pass class_names, e.g. a fine-tuned model's model.class_names "
                             "(ImageNet's need 1000 scores per row)")
        ids, class_names = imagenet.wordnet_ids(), imagenet.class_names()
    else:
        if isinstance(class_names, (dict, str, bytes)):  # (a dict gave its keys as the names)
            raise TypeError(f"class_names: a list of names in class order, not {type(class_names).__name__}")
        class_names = list(class_names)
        if len(class_names) != count:
            raise ValueError(f"{len(class_names)} class names for {count} scores per row")
        # ImageNet's own names (an ImageNet model's `class_names`) keep ImageNet's WordNet ids.
        ids = imagenet.wordnet_ids() if class_names == imagenet.class_names() else list(range(count))
    check_top(top)
    top = min(int(top), count)
    decoded = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:top]
        decoded.append([(ids[index], class_names[index], float(row[index])) for index in order])
    return decoded
