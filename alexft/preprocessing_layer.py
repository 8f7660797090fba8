"""Caffe's preprocessing in TensorFlow ops only, as a Keras layer: for a model that takes raw
RGB images and must save, export and serve without Python (a `tf.numpy_function` cannot).

It comes close to OpenCV's pipeline (`preprocess_input`, `alexft classify`) but not to the bit:
TensorFlow's bilinear resize works in float where OpenCV's uses fixed-point uint8 arithmetic,
so about one pixel value in eight differs by one grey level (tests/test_export.py pins it).
"""
import keras
import tensorflow as tf

from .layers import PACKAGE
from .preprocess import CROP, MEAN_BGR, RESIZE, TEN_CROP_OFFSETS

_CENTRE = TEN_CROP_OFFSETS[4][0]


def caffe_views(images):
    """RGB images, (H, W, 3) or (N, H, W, 3), uint8 or floats in 0-255 -> float32 centre views:
    whole grey levels, BGR, resized to 256x256 (bilinear, aspect ratio ignored), whole grey
    levels again, ImageNet's mean pixel subtracted, the centre 227x227."""
    images = _colour_channels(tf.convert_to_tensor(images))
    pixels = tf.cast(images, tf.float32)
    if images.dtype.is_floating:  # as preprocess_input rounds floats to what an image file holds
        pixels = tf.clip_by_value(tf.round(pixels), 0.0, 255.0)
    bgr = tf.reverse(pixels, axis=[-1])
    resized = tf.image.resize(bgr, (RESIZE, RESIZE), method="bilinear", antialias=False)
    resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)  # OpenCV's result is whole uint8 grey levels
    prepared = resized - tf.constant(MEAN_BGR)
    return prepared[..., _CENTRE : _CENTRE + CROP, _CENTRE : _CENTRE + CROP, :]


CHANNELS_SAID = "CaffePreprocessing takes RGB images, (H, W, 3) or (N, H, W, 3) (grey, grey and alpha, or RGBA too)"


def _colour_channels(images):
    """Grey (1 channel) stays grey, to be broadcast over BGR's three; an alpha channel is dropped
    (grey and alpha, RGBA), as preprocess_input drops it; any other count is refused plainly (it
    was TensorFlow's "Incompatible shapes: [1,256,256,4] vs. [3]"). A count known only when the
    graph runs (a model served for any image) is handled there alike."""
    channels = images.shape[-1] if images.shape.rank else None
    if channels in (2, 4):
        return images[..., : channels - 1]
    if channels in (1, 3):
        return images
    if channels is not None:
        raise ValueError(f"{CHANNELS_SAID}; got shape {tuple(images.shape)}")
    count = tf.shape(images)[-1]
    check = tf.debugging.assert_equal(tf.reduce_any(tf.equal(count, [1, 2, 3, 4])), True, message=CHANNELS_SAID)
    # The slice waits for the check (None when eager, which raised already): else the mean's
    # subtraction could fail first, with TensorFlow's "Incompatible shapes".
    with tf.control_dependencies([check] if check is not None else []):
        kept = tf.where(tf.equal(count % 2, 0), count - 1, count)  # (2 -> 1, 4 -> 3)
    return images[..., :kept]


@keras.saving.register_keras_serializable(PACKAGE)
class CaffePreprocessing(keras.layers.Layer):
    """RGB images of any size (uint8 or 0-255 floats) -> AlexNet's (227, 227, 3) inputs, in the
    graph. What `preprocess_input` returns for a Keras tensor, e.g. `keras.Input((None, None, 3))`."""

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)  # uint8 pixels stay uint8 until caffe_views rounds them
        super().__init__(**kwargs)

    def call(self, images):
        if isinstance(images, tf.RaggedTensor):  # images of different sizes (Dataset.ragged_batch): one at a time
            return tf.map_fn(lambda image: caffe_views(image.to_tensor() if isinstance(image, tf.RaggedTensor) else image),
                             images, fn_output_signature=tf.TensorSpec([CROP, CROP, 3], tf.float32))
        return caffe_views(images)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], CROP, CROP, 3)
