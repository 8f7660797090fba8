"""alexft as a Keras citizen (issue #23): `alexft.AlexNet` in keras.applications' manner,
`preprocess_input`, `decode_predictions`, models that save, load, clone and export, and
training in plain Keras. Outputs are checked against the numpy forward pass (tests/reference.py)
and the pipeline against Caffe's recipe written out here, not against alexft's own code."""
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import alexft
import reference
from alexft.weights import WeightSet, save
from fixtures import photo_paths, random_params

MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434])  # Caffe's ilsvrc_2012 mean pixel
TEN_CLASSES = [f"class {chr(65 + index)}" for index in range(10)]


@pytest.fixture(scope="module")
def ten_class_weights(tmp_path_factory):
    """A fine-tuned-like file: 10 classes with names."""
    params = random_params(seed=4, num_classes=10)
    path = tmp_path_factory.mktemp("ten") / "model.npz"
    save(WeightSet({name: tuple(pair) for name, pair in params.items()}, TEN_CLASSES), path)
    return path, params


def caffe_views(rgb_images):
    """Caffe's recipe from its description: 8-bit BGR, 256x256 bilinear, minus the mean pixel,
    the centre 227x227 (offset 14)."""
    views = []
    for rgb in rgb_images:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        resized = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float64) - MEAN_BGR
        views.append(resized[14:241, 14:241])
    return np.stack(views).astype(np.float32)


def photos_rgb(names=("chelsea", "coffee")):
    return [np.asarray(Image.open(photo_paths()[name]).convert("RGB")) for name in names]


def photo_views():
    return np.stack([alexft.preprocess_input(image) for image in photos_rgb()])


def assert_close(actual, expected, rtol=2e-4):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


# --- preprocess_input, decode_predictions ---------------------------------------------------------


def test_preprocess_input_is_caffes_recipe_and_what_classify_feeds_the_network():
    images = photos_rgb()
    views = np.stack([alexft.preprocess_input(image) for image in images])
    assert views.shape == (2, 227, 227, 3) and views.dtype == np.float32
    np.testing.assert_allclose(views, caffe_views(images), atol=1e-4)
    for name, view in zip(("chelsea", "coffee"), views):  # the command line's own input, bit for bit
        np.testing.assert_array_equal(view, alexft.image_views(photo_paths()[name])[0])
    same_size = [cv2.resize(image, (320, 240)) for image in images]
    batch = alexft.preprocess_input(np.stack(same_size))
    np.testing.assert_array_equal(batch, np.stack([alexft.preprocess_input(image) for image in same_size]))
    # Floats in 0-255 are the same pixels; the input is left alone.
    as_float = same_size[0].astype(np.float32)
    np.testing.assert_array_equal(alexft.preprocess_input(as_float), batch[0])
    np.testing.assert_array_equal(as_float, same_size[0])


def test_preprocess_input_runs_on_tensors_and_in_a_dataset_map():
    images = np.stack([cv2.resize(image, (256, 256)) for image in photos_rgb()])
    expected = alexft.preprocess_input(images)
    np.testing.assert_array_equal(alexft.preprocess_input(tf.constant(images)).numpy(), expected)
    dataset = tf.data.Dataset.from_tensor_slices(images.astype(np.float32)).batch(2).map(alexft.preprocess_input)
    assert dataset.element_spec.shape.as_list() == [None, 227, 227, 3]
    np.testing.assert_array_equal(next(iter(dataset)).numpy(), expected)


def test_preprocess_input_in_a_dataset_map_says_what_is_wrong_when_the_map_is_built(tmp_path):
    """tf.io.decode_image's default leaves the rank unknown (a GIF's frames): the error said
    "got <unknown>". Five channels were only refused when the dataset was read."""
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    files = tf.data.Dataset.from_tensor_slices([str(tmp_path / "a.png")])
    with pytest.raises(ValueError, match=r"tensor of unknown rank: decode with tf.io.decode_image\(data, channels=3, "
                                         r"expand_animations=False\)"):
        files.map(lambda path: tf.io.decode_image(tf.io.read_file(path))).map(alexft.preprocess_input)
    decoded = files.map(lambda path: tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False))
    assert next(iter(decoded.map(alexft.preprocess_input))).shape == (227, 227, 3)
    with pytest.raises(ValueError, match=r"got \(None, 50, 50, 5\)$"):
        tf.data.Dataset.from_tensor_slices(np.zeros((2, 50, 50, 5), np.uint8)).batch(2).map(alexft.preprocess_input)
    # Mapped over (image, label) pairs, the labels went into data_format: "Expected int32 passed
    # to parameter 'y' of op 'Equal', got 'channels_last'".
    labelled = tf.data.Dataset.from_tensor_slices((np.zeros((2, 50, 50, 3), np.uint8), [0, 1]))
    with pytest.raises(TypeError, match=r"preprocess_input: data_format is None or 'channels_last', not "
                                        r"\w+; on a dataset of \(images, labels\): dataset.map\(lambda x, y: "
                                        r"\(alexft.preprocess_input\(x\), y\)\)"):
        labelled.map(alexft.preprocess_input)
    assert labelled.map(lambda x, y: (alexft.preprocess_input(x), y)).element_spec[0].shape == (227, 227, 3)


def test_preprocess_input_refuses_what_is_not_an_image():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(N, H, W, 3\) \(or grey .*; got \(2, 10, 10\): grey "
                                         r"images in a batch need a channel axis, x\[\.\.\., np.newaxis\]$"):
        alexft.preprocess_input(np.zeros((2, 10, 10), np.uint8))  # grey images in a batch: (N, H, W, 1)
    # Five channels: said so (it was told that grey images in a batch need a channel axis).
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)\); got \(10, 10, 5\): 5 channels; an image has 3 \(or 1, 2, 4\)$"):
        alexft.preprocess_input(np.zeros((10, 10, 5), np.uint8))
    # Four grey images: the channel axis first (the transpose, followed, took them as one RGBA image).
    with pytest.raises(ValueError, match=r"got \(4, 50, 60\): grey images in a batch need a channel axis, "
                                         r"x\[\.\.\., np.newaxis\]; channels first\? alexft takes channels last"):
        alexft.preprocess_input(np.zeros((4, 50, 60), np.uint8))
    # Channels first, as PyTorch holds images: named, the grey-batch reading of one image kept beside it.
    with pytest.raises(ValueError, match=r"got \(3, 64, 48\): channels first\? alexft takes channels last, "
                                         r"x.transpose\(1, 2, 0\); grey images in a batch need a channel axis"):
        alexft.preprocess_input(np.zeros((3, 64, 48), np.uint8))
    with pytest.raises(ValueError, match=r"got \(2, 3, 64, 48\): channels first\? alexft takes channels last, "
                                         r"x.transpose\(0, 2, 3, 1\)$"):
        alexft.preprocess_input(np.zeros((2, 3, 64, 48), np.uint8))
    for path in ("astronaut.jpg", Path("astronaut.jpg"), ["a.jpg", "b.jpg"]):  # file names: image_views reads them
        with pytest.raises(TypeError, match=r"not file names: for files use alexft.image_views\(path\)"):
            alexft.preprocess_input(path)
    with pytest.raises(ValueError, match=r"got \(10, 10, 0\)"):
        alexft.preprocess_input(np.zeros((10, 10, 0), np.uint8))
    with pytest.raises(TypeError, match="uint8, uint16 or float pixels; got <U1"):
        alexft.preprocess_input(np.full((10, 10, 3), "a"))
    with pytest.raises(ValueError, match="data_format 'channels_first': alexft's models take channels_last"):
        alexft.preprocess_input(np.zeros((1, 3, 10, 10), np.uint8), data_format="channels_first")
    with pytest.raises(ValueError, match=r"an image of no pixels, shaped \(0, 10, 3\)"):
        alexft.preprocess_input(np.zeros((0, 10, 3), np.uint8))


def test_pil_images_of_palettes_and_cmyk_are_their_colours_not_their_codes(tmp_path):
    """np.asarray of a palette ("P") image is its palette indices, read as grey; of a CMYK one,
    four channels read as RGBA. preprocess_input takes each as its file is read: in colour."""
    rgb = cv2.resize(photos_rgb()[0], (120, 90))
    palette = Image.fromarray(rgb).quantize(64)
    palette.save(tmp_path / "palette.png")
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    for image, path in ((palette, tmp_path / "palette.png"), (cmyk, None)):
        expected = alexft.preprocess_input(np.asarray(image.convert("RGB")))
        np.testing.assert_array_equal(alexft.preprocess_input(image), expected)
        np.testing.assert_array_equal(alexft.preprocess_input([image, image])[1], expected)
        if path is not None:  # the file, read by OpenCV, gives the same pixels
            np.testing.assert_array_equal(alexft.image_views(path)[0], expected)
    assert np.abs(alexft.preprocess_input(palette) - alexft.preprocess_input(np.asarray(palette))).max() > 10


def test_grey_rgba_and_16_bit_images_are_read_as_their_files_are(tmp_path):
    """What OpenCV makes of such a file (grey tiled, alpha dropped, 16 bits shifted to 8) is
    what the same pixels as an array get."""
    rgb = cv2.resize(photos_rgb()[0], (200, 150))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, np.arange(150 * 200).reshape(150, 200) % 256]).astype(np.uint8)
    deep = rgb.astype(np.uint16) * 256 + np.random.default_rng(0).integers(0, 256, rgb.shape, dtype=np.uint16)
    grey_alpha = np.dstack([grey, rgba[:, :, 3]])
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "grey_alpha.png")
    cases = (("grey.png", grey, grey), ("rgba.png", rgba, cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)),
             ("deep.png", deep, deep[:, :, ::-1]), ("grey_alpha.png", grey_alpha, None),
             ("deep.png", deep.astype(">u2"), None))  # big-endian, as FITS readers give
    for name, pixels, as_written in cases:
        path = tmp_path / name
        assert as_written is None or cv2.imwrite(str(path), as_written)
        from_file = alexft.image_views(path)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(alexft.preprocess_input(pixels), from_file, err_msg=name)
            np.testing.assert_array_equal(alexft.preprocess_input(pixels[np.newaxis, ..., np.newaxis] if pixels.ndim == 2
                                                                  else pixels[np.newaxis])[0], from_file, err_msg=name)
    assert not np.array_equal(alexft.preprocess_input(rgba), alexft.preprocess_input(grey))
    # A list of grey photos of one size is images, not one (N, H, W) array to guess about; a
    # TensorFlow tensor of one grey image is one image too.
    np.testing.assert_array_equal(alexft.preprocess_input([grey, grey])[1], alexft.preprocess_input(grey))
    np.testing.assert_array_equal(alexft.preprocess_input(tf.constant(grey)).numpy(), alexft.preprocess_input(grey))
    # One image as nested lists (image.tolist(), a JSON request) is one image, not H grey ones.
    np.testing.assert_array_equal(alexft.preprocess_input(rgb.tolist()), alexft.preprocess_input(rgb))
    np.testing.assert_array_equal(alexft.preprocess_input([rgb.tolist()] * 2)[1], alexft.preprocess_input(rgb))
    with pytest.raises(ValueError, match=r"on a model's input takes RGB images, \(\.\.\., 3\) \(grey, grey and alpha, "
                                         r"or RGBA too\), of 0-255 grey levels; got uint16 \(None, None, None, 3\)"):
        alexft.preprocess_input(keras.Input((None, None, 3), dtype="uint16"))
    with pytest.raises(ValueError, match=r"got uint8 \(None, None, None, 5\): 5 channels; an image has 3 \(or 1, 2, 4\)$"):
        alexft.preprocess_input(keras.Input((None, None, 5), dtype="uint8"))
    # Channels first in a model's input: refused as the model is built (it failed only when called).
    with pytest.raises(ValueError, match=r"got uint8 \(None, 3, None, None\): channels first\? the model takes channels "
                                         r"last, keras.Input\(\(None, None, 3\)\)$"):
        alexft.preprocess_input(keras.Input((3, None, None), dtype="uint8"))
    # A model taking RGBA (or grey) images drops the alpha in the graph, as preprocess_input does on arrays.
    for channels, image in ((4, rgba), (1, grey[..., np.newaxis])):
        given = keras.Input((None, None, channels), dtype="uint8")
        model = keras.Model(given, alexft.preprocess_input(given))
        np.testing.assert_allclose(model(image[np.newaxis]).numpy(), alexft.preprocess_input(image)[np.newaxis],
                                   atol=1 + 1e-4)  # (the in-graph resize: within a grey level)


def test_preprocess_input_takes_a_list_of_photos_of_different_sizes():
    images = photos_rgb() + [cv2.resize(photos_rgb()[0], (123, 77))]
    assert len({image.shape for image in images}) == 3
    np.testing.assert_array_equal(alexft.preprocess_input(images),
                                  np.stack([alexft.preprocess_input(image) for image in images]))
    # tf.data's way to batch them: a ragged batch (it failed: "'input' of 'PyFuncStateless' Op have
    # types [<NOT CONVERTIBLE TO TENSOR>]").
    dataset = tf.data.Dataset.from_generator(lambda: iter(images),
                                             output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
    batches = [batch.numpy() for batch in dataset.ragged_batch(2).map(alexft.preprocess_input)]
    assert [len(batch) for batch in batches] == [2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), np.stack([alexft.preprocess_input(image) for image in images]))
    grey = [image[..., 1] for image in images]  # grey ones tiled to RGB, as one at a time
    np.testing.assert_array_equal(alexft.preprocess_input(tf.ragged.stack([tf.constant(image) for image in grey])).numpy(),
                                  alexft.preprocess_input(grey))
    with pytest.raises(ValueError, match=r"takes a ragged batch of images shaped \(N, None, None, 3\), or \(N, None, None\) "
                                         r"for grey ones; got \(2, None\)"):
        alexft.preprocess_input(tf.ragged.constant([[1, 2, 3], [4]]))
    # The in-graph layer takes a ragged batch too, image by image (it failed: "object of type
    # 'RaggedTensor' has no len()"), as a model serving raw images is fed by Dataset.ragged_batch.
    layer = alexft.CaffePreprocessing()
    ragged = next(iter(dataset.ragged_batch(3)))
    np.testing.assert_array_equal(layer(ragged).numpy(), np.stack([layer(image[np.newaxis])[0] for image in images]))


def test_the_predictor_names_what_it_takes_when_given_raw_pixels(predictor):
    raw = photos_rgb()[0][np.newaxis]  # uint8, 300x451: a tf.function's refusal would be pages long
    for wrong, said in ((raw, r"got uint8 \(1, 300, 451, 3\)"), (raw.astype(np.float32), r"got float32 \(1, 300, 451, 3\)"),
                        (np.zeros((228, 227, 3), np.float32), r"got float32 \(228, 227, 3\)")):
        with pytest.raises(ValueError, match="the network takes preprocessed views, float \\(N, 227, 227, 3\\); " + said):
            predictor.probabilities(wrong)


def test_preprocess_input_warns_of_pixels_that_are_not_grey_levels():
    """0-1 floats would be rounded to a black-and-white image, and preprocessed views clipped: both
    give a confident wrong answer, so both are said; NaN is refused. As alexft's other notes,
    AlexftWarnings (they were plain UserWarnings, which the documented filter left alone)."""
    image = photos_rgb()[0]
    for wrong, message in ((image / 255.0, "every pixel is within 0-1; it takes grey levels 0-255"),
                           (alexft.preprocess_input(image), "below 0: preprocessed already\\? .* clips these to 0 \\(right for "
                                                            "the overshoot of a bicubic or lanczos resize\\)")):
        for given in (wrong, [wrong, wrong]):
            with pytest.warns(alexft.AlexftWarning, match=message) as caught:
                alexft.preprocess_input(given)
            assert caught[0].filename == __file__  # pointed at the caller's line
    brightest = int(image.max()) * 4
    with pytest.warns(alexft.AlexftWarning, match=f"pixels up to {brightest}, above 255: it takes grey levels 0-255 and clips"):
        alexft.preprocess_input(image.astype(np.float32) * 4)
    with pytest.warns(alexft.AlexftWarning, match=f"uint16 pixels, all up to {image.max()}: uint16 is read as 16-bit levels"):
        alexft.preprocess_input(image.astype(np.uint16))
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        alexft.preprocess_input(np.full((50, 50, 3), np.nan, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # grey levels as floats, a black image: no warning
        alexft.preprocess_input(image.astype(np.float32))
        alexft.preprocess_input(np.zeros((50, 50, 3), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=alexft.AlexftWarning)  # docs/commands.md: silences alexft's notes
        alexft.preprocess_input(image / 255.0)


def test_preprocess_input_on_a_models_input_is_a_layer_that_exports_and_serves_without_python(tmp_path):
    """On `keras.Input` it builds TF ops (a numpy_function would leave a SavedModel no other
    process can call): within a grey level of the exact OpenCV path on some pixels, and the
    exported model gives the same views in a process that never imports alexft."""
    images = photos_rgb()
    pixels = keras.Input((None, None, 3), dtype="uint8")
    model = keras.Model(pixels, alexft.preprocess_input(pixels))
    assert isinstance(model.layers[-1], alexft.CaffePreprocessing) and model.output.shape[1:] == (227, 227, 3)
    for image in images:
        in_graph = model(image[np.newaxis]).numpy()[0]
        difference = np.abs(in_graph - alexft.preprocess_input(image))
        assert difference.max() <= 1 + 1e-4 and (difference > 1e-4).mean() < 0.2
    model.save(tmp_path / "pre.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "pre.keras")(images[0][np.newaxis]),
                                  model(images[0][np.newaxis]))
    model.export(str(tmp_path / "served"), verbose=False)
    np.save(tmp_path / "image.npy", images[1][np.newaxis])
    serve = ("import sys, numpy as np, tensorflow as tf; served = tf.saved_model.load(sys.argv[1]); "
             "print(repr(served.serve(np.load(sys.argv[2])).numpy().tolist()))")
    done = subprocess.run([sys.executable, "-c", serve, str(tmp_path / "served"), str(tmp_path / "image.npy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.float32(eval(done.stdout)), model(images[1][np.newaxis]).numpy())


def test_an_integer_input_tensor_is_refused_with_the_way_to_give_a_model_raw_pixels():
    """A uint8 input_tensor built a model that failed only in predict, deep in TensorFlow
    ("GroupedConv2D.call(): ... DataType uint8 not in list of allowed values"); the way named works."""
    for dtype in ("uint8", "int32"):
        with pytest.raises(ValueError, match=f"^input_tensor is {dtype}: AlexNet takes float32 images as preprocess_input "
                                             r"returns them; for raw uint8 images .* input_tensor=alexft\.preprocess_input\("
                                             r"keras\.Input\(\(None, None, 3\), dtype=\"uint8\"\)\) \(an alexft\."
                                             r"CaffePreprocessing layer\)$"):
            alexft.AlexNet(weights=None, input_tensor=keras.Input((227, 227, 3), dtype=dtype))
    model = alexft.AlexNet(weights=None, input_tensor=alexft.preprocess_input(keras.Input((None, None, 3), dtype="uint8")))
    assert model.predict(photos_rgb()[0][np.newaxis], verbose=0).shape == (1, 1000)


def test_a_model_on_raw_pixels_has_one_input_and_calls_without_a_list(tmp_path):
    """AlexNet(input_tensor=preprocess_input(keras.Input(...))), the docs' way to give a model raw
    pixels, had a list of one input: every model(image) warned "The structure of `inputs` doesn't
    match the expected structure", and its export served only serve([image])."""
    model = alexft.AlexNet(weights=None, input_tensor=alexft.preprocess_input(keras.Input((None, None, 3), dtype="uint8")))
    assert not isinstance(model.input, list)
    image = photos_rgb()[0][np.newaxis]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        called = model(image).numpy()
    np.testing.assert_allclose(called, model.predict(image, verbose=0), atol=1e-6)
    model.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    np.testing.assert_allclose(served.serve(image).numpy(), called, atol=1e-6)


def test_keras_image_data_format_channels_first_leaves_the_model_channels_last(canonical_weights_file):
    """With keras.config.set_image_data_format("channels_first") (or keras.json saying so), the
    model's pooling layers pooled the wrong axes: include_top=False, pooling="avg" gave 6 outputs
    and a full model failed inside GroupedConv2D. alexft's models take channels-last images
    whatever that setting says, and compute what they compute under the default."""
    image = alexft.preprocess_input(photos_rgb()[0])[np.newaxis]
    expected = {pooling: alexft.AlexNet(weights=canonical_weights_file, include_top=False, pooling=pooling)(image).numpy()
                for pooling in ("avg", "max")}
    expected["top"] = alexft.AlexNet(weights=canonical_weights_file)(image).numpy()
    keras.config.set_image_data_format("channels_first")
    try:
        for pooling in ("avg", "max"):
            model = alexft.AlexNet(weights=canonical_weights_file, include_top=False, pooling=pooling)
            assert model.output_shape == (None, 256)
            np.testing.assert_array_equal(model(image).numpy(), expected[pooling])
        np.testing.assert_array_equal(alexft.AlexNet(weights=canonical_weights_file)(image).numpy(), expected["top"])
    finally:
        keras.config.set_image_data_format("channels_last")

def test_decode_predictions_names_imagenet_classes_by_wordnet_id():
    scores = np.zeros((2, 1000), np.float32)
    scores[0, [281, 285, 3]] = [0.7, 0.2, 0.1]
    scores[1, 999] = 1.0
    decoded = alexft.decode_predictions(scores, top=3)
    # Index 281 of ILSVRC-2012 in Caffe's synset order is n02123045, "tabby, tabby cat".
    assert decoded[0] == [("n02123045", "tabby, tabby cat", pytest.approx(0.7)),
                          ("n02124075", "Egyptian cat", pytest.approx(0.2)),
                          ("n01491361", "tiger shark, Galeocerdo cuvieri", pytest.approx(0.1))]
    assert decoded[1][0][:2] == ("n15075141", "toilet tissue, toilet paper, bathroom tissue")
    assert len(alexft.decode_predictions(scores)[0]) == 5
    assert alexft.decode_predictions(np.eye(3)[[2]], top=2, class_names=["a", "b", "c"]) == [[(2, "c", 1.0), (0, "a", 0.0)]]
    # An ImageNet model's own class_names (a .keras export's) keep the WordNet ids; a dict of names is refused
    # (its keys were taken as the names).
    assert alexft.decode_predictions(scores, top=1, class_names=alexft.imagenet_class_names())[0][0][0] == "n02123045"
    with pytest.raises(TypeError, match="class_names: a list of names in class order, not dict"):
        alexft.decode_predictions(np.eye(3), class_names={0: "a", 1: "b", 2: "c"})
    with pytest.raises(ValueError, match="3 classes: pass class_names, e.g. a fine-tuned model's model.class_names"):
        alexft.decode_predictions(np.eye(3))
    with pytest.raises(ValueError, match=r"shaped \(N, classes\); got shape \(1000,\)"):
        alexft.decode_predictions(np.zeros(1000))
    with pytest.raises(ValueError, match=r"shaped \(N, classes\); got a dict"):  # it said "got ()"
        alexft.decode_predictions({"tabby": 0.7})
    for wrong in (0, -1, 2.5, True):  # top=0 gave the top 1
        with pytest.raises(ValueError, match="top must be a whole number of at least 1"):
            alexft.decode_predictions(np.eye(3), top=wrong, class_names=["a", "b", "c"])


# --- AlexNet(...) --------------------------------------------------------------------------------


def test_alexnet_with_a_weights_file_matches_the_reference(canonical_weights_file, canonical_params):
    images = photos_rgb()
    views = alexft.preprocess_input(np.stack([cv2.resize(image, (300, 300)) for image in images]))
    model = alexft.AlexNet(weights=canonical_weights_file)
    assert [layer.name for layer in model.layers if layer.weights] == ["conv1", "conv2", "conv3", "conv4", "conv5",
                                                                       "fc6", "fc7", "fc8"]
    expected_logits = reference.forward(canonical_params, views)
    assert_close(model(views).numpy(), reference.softmax(expected_logits))
    assert model.layers[-1].name == "prob"
    logits = alexft.AlexNet(weights=canonical_weights_file, classifier_activation=None)
    assert logits.layers[-1].name == "logits"
    assert_close(logits(views).numpy(), expected_logits)
    # An empty batch (a filtered batch in a user's pipeline) gives no rows, as keras.applications'
    # models do: TensorFlow's oneDNN convolution handed it back as it came, and the bias failed
    # with "Must provide as many biases as the last dimension of the input tensor: [96] vs. [0,227,227,3]".
    assert model(views[:0]).shape == (0, 1000)
    backbone = alexft.AlexNet(weights=canonical_weights_file, include_top=False, pooling="avg", input_shape=(160, 160, 3))
    assert backbone(np.zeros((0, 160, 160, 3), np.float32)).shape == (0, 256)


def test_alexnet_takes_its_class_count_and_names_from_the_file(ten_class_weights):
    path, params = ten_class_weights
    model = alexft.AlexNet(weights=path)
    assert model.output.shape[-1] == 10 and model.class_names == TEN_CLASSES
    views = photo_views()
    scores = model(views).numpy()
    assert_close(scores, reference.softmax(reference.forward(params, views)))
    assert alexft.decode_predictions(scores, top=1, class_names=model.class_names)[0][0][1] in TEN_CLASSES
    with pytest.raises(ValueError, match="have 10 classes, not 1000: leave classes unset, or use include_top=False"):
        alexft.AlexNet(weights=path, classes=1000)
    assert alexft.AlexNet(weights=None, classes=7).output.shape[-1] == 7


def test_without_the_top_it_ends_at_pool5_or_any_layer_and_pools_as_keras_does(canonical_weights_file,
                                                                                   canonical_params):
    views = photo_views()
    base = alexft.AlexNet(weights=canonical_weights_file, include_top=False)
    assert base.output.shape[1:] == (6, 6, 256) and not any(layer.name.startswith("fc") for layer in base.layers)
    pool5 = reference.forward(canonical_params, views, until="pool5")
    assert_close(base(views).numpy(), pool5)
    assert_close(alexft.AlexNet(weights=canonical_weights_file, include_top=False, pooling="avg")(views).numpy(),
                 pool5.mean(axis=(1, 2)))
    assert_close(alexft.AlexNet(weights=canonical_weights_file, include_top=False, pooling="max")(views).numpy(),
                 pool5.max(axis=(1, 2)))
    fc7 = alexft.AlexNet(weights=canonical_weights_file, include_top=False, last_layer="fc7")
    assert_close(fc7(views).numpy(), reference.forward(canonical_params, views, until="fc7"))
    # Without fc6 any size of at least 67 pixels goes; conv5 of a 291-pixel input is 17x17.
    wide = alexft.AlexNet(weights=None, include_top=False, last_layer="conv5", input_shape=(291, 291, 3))
    assert wide.output.shape[1:] == (17, 17, 256)
    for wrong, message in ((dict(include_top=True, input_shape=(300, 300, 3)), "the input is \\(227, 227, 3\\)"),
                           (dict(include_top=False, pooling="mean"), "pooling must be one of"),
                           (dict(include_top=False, last_layer="fc7", pooling="avg"), "needs a convolutional output"),
                           (dict(include_top=False, last_layer="fc9"), "AlexNet has no layer 'fc9'; a model may end "
                                                                       "at conv1, norm1, pool1, conv2, norm2, pool2, "
                                                                       "conv3, conv4, conv5, pool5, fc6, fc7, fc8$"),
                           (dict(include_top=True, last_layer="fc7"), "needs include_top=False"),
                           (dict(include_top=False, input_shape=(40, 40, 3)), "at least 67x67")):
        with pytest.raises(ValueError, match=message):
            alexft.AlexNet(weights=None, **wrong)
    # Options keras.applications ignores in silence are said to be unused (the model is built).
    for unused, message in ((dict(pooling="avg"), "pooling='avg' is not used: with include_top=True the output is "
                                                  "the class scores"),
                            (dict(include_top=False, classes=5), "classes=5 is not used: it sizes fc8, which this "
                                                                 "model leaves out")):
        with pytest.warns(alexft.AlexftWarning, match=f"^AlexNet: {re.escape(message)}"):
            alexft.AlexNet(weights=None, **unused)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alexft.AlexNet(weights=None, include_top=False, last_layer="fc8", classes=5)  # fc8 kept: classes used
    with pytest.raises(TypeError, match="weights must be 'imagenet', a path, a WeightSet or None; got int$"):
        alexft.AlexNet(weights=3)
    for typo in ("imagnet", "ImageNett"):  # "imagnet: weights file not found"
        with pytest.raises(ValueError, match=f"^weights='{typo}': no such file; did you mean 'imagenet'\\?$"):
            alexft.AlexNet(weights=typo)
    with pytest.raises(alexft.WeightsError, match=r"^imagenet.npz: weights file not found$"):
        alexft.AlexNet(weights="imagenet.npz")  # a file's name: not taken for a typo
    for empty in ("", " "):  # "" was read as the current folder: ".: is a folder, not a weights file"
        with pytest.raises(alexft.WeightsError, match=r"^weights: an empty path '\s*'; give a weights file, or leave it "
                                                      r"out for the default ones$"):
            alexft.AlexNet(weights=empty)
    with pytest.raises(TypeError, match=r"got Functional \(a Keras model: alexft.weights_from_model\(model\) gives its "
                                        r"WeightSet\)$"):
        alexft.AlexNet(weights=alexft.build_alexnet(num_classes=3))


def test_any_input_size_without_fc6_also_not_square_or_not_fixed(canonical_weights_file, canonical_params):
    """Height and width each follow the input (291x195 gives conv5 17x11), pooled as Caffe pools:
    rounding up, the last window clipped (a 250-pixel side gives conv1 60 wide, pool1 30, where
    rounding down would give 29); (None, None, 3) takes every size in one model, also in TF Lite.
    A model up to fc6 or beyond takes 227x227 only, said so."""
    rng = np.random.default_rng(0)
    tall = rng.uniform(-120, 120, (1, 291, 195, 3)).astype(np.float32)
    wide = rng.uniform(-120, 120, (1, 150, 250, 3)).astype(np.float32)
    free = alexft.AlexNet(weights=canonical_weights_file, include_top=False, last_layer="conv5", input_shape=(None, None, 3))
    assert free.output.shape[1:] == (None, None, 256)
    for images, size in ((tall, (17, 11)), (wide, (8, 15))):
        fixed = alexft.AlexNet(weights=canonical_weights_file, include_top=False, last_layer="conv5",
                               input_shape=images.shape[1:])
        expected = reference.forward(canonical_params, images, until="conv5")
        assert fixed.output.shape[1:] == expected.shape[1:] == (*size, 256)
        assert_close(fixed(images).numpy(), expected)
        assert_close(free(images).numpy(), expected)
    # TF Lite converts the shape-free model, resized per call (it failed on conv2: "'tf.Conv2D' op is
    # neither a custom op nor a flex op", the pooling's pad having lost the channel count).
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(free).convert())
    for images in (tall, wide):
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
        interpreter.invoke()
        assert_close(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]),
                     reference.forward(canonical_params, images, until="conv5"))
    pool1 = alexft.AlexNet(weights=canonical_weights_file, include_top=False, last_layer="pool1", input_shape=wide.shape[1:])
    expected = reference.caffe_max_pool(reference.caffe_lrn(reference.forward(canonical_params, wide, until="conv1")))
    assert pool1.output.shape[1:] == expected.shape[1:] == (17, 30, 96)
    assert_close(pool1(wide).numpy(), expected)
    with pytest.raises(ValueError, match=r"a model up to fc7 takes \(227, 227, 3\) inputs .*got \(300, 300, 3\)"):
        alexft.AlexNet(weights=None, include_top=False, last_layer="fc7", input_shape=(300, 300, 3))


def test_weights_saved_from_a_model_on_a_file_load_into_one_built_without_weights(ten_class_weights, tmp_path):
    """Keras' save_weights/load_weights pattern: the same code, built once on a file that names its
    classes and once with weights=None, gives models whose .weights.h5 files are interchangeable."""
    def classifier(weights):
        return keras.Sequential([alexft.AlexNet(weights=weights, include_top=False, last_layer="fc7"),
                                 keras.layers.Dense(3, name="head")])

    trained = classifier(ten_class_weights[0])
    trained.save_weights(tmp_path / "classifier.weights.h5")
    rebuilt = classifier(None)
    rebuilt.load_weights(tmp_path / "classifier.weights.h5")
    views = photo_views()
    np.testing.assert_array_equal(rebuilt(views).numpy(), trained(views).numpy())
    assert trained.layers[0].class_names is None  # fc7 features are not class scores


def test_imagenet_weights_are_found_as_the_command_line_finds_them(canonical_weights_file, monkeypatch, tmp_path):
    monkeypatch.setenv("ALEXFT_WEIGHTS", str(canonical_weights_file))
    model = alexft.AlexNet(weights="imagenet", include_top=False, last_layer="conv1")
    kernel = model.get_layer("conv1").kernel.numpy()
    np.testing.assert_array_equal(kernel, alexft.load_weights(canonical_weights_file).params["conv1"][0])
    monkeypatch.delenv("ALEXFT_WEIGHTS")
    with pytest.raises(alexft.WeightsError, match="unreachable.npy"):  # the tests' download source is closed
        alexft.AlexNet(weights="imagenet")
    # finetune(weights="imagenet"), load_predictor(...) and the others said "imagenet: weights
    # file not found": they take the word as AlexNet does (they all resolve weights here),
    # unless a file has that name.
    with pytest.raises(alexft.WeightsError, match="unreachable.npy"):
        alexft.resolve_weights("ImageNet")
    monkeypatch.chdir(tmp_path)
    shutil.copy(canonical_weights_file, tmp_path / "imagenet")
    assert alexft.resolve_weights("imagenet") == Path("imagenet")


def test_argument_mistakes_are_said_before_any_weights_are_looked_for(monkeypatch):
    """With the default weights="imagenet" a wrong argument first went for the download (233 MB;
    offline "all 2 sources failed"), and the mistake was never said."""
    def looked_for(*args, **kwargs):
        raise AssertionError("the weights were looked for before the arguments were checked")

    monkeypatch.setattr("alexft.weights.sources.resolve_weights", looked_for)
    for wrong, message in ((dict(include_top=False, input_shape=(3, 227, 227)),
                            r"^input_shape must be \(height, width, 3\); got \(3, 227, 227\)$"),
                           (dict(include_top=False, last_layer="fc7", pooling="avg"),
                            r"^pooling='avg' needs a convolutional output; fc7 is \(4096,\)$"),
                           (dict(include_top=False, last_layer="fc8", pooling="max", classes=5),
                            r"^pooling='max' needs a convolutional output; fc8 is \(5,\)$"),
                           (dict(classes=0), "^classes must be a positive whole number; got 0$"),
                           (dict(classifier_activation="sofmax"), "sofmax"),
                           (dict(input_tensor=keras.Input((227, 227, 3), dtype="uint8")), "^input_tensor is uint8: ")):
        with pytest.raises(ValueError, match=message):
            alexft.AlexNet(**wrong)


def test_a_scripts_mistakes_in_export_model_and_alexnet_are_said_before_tensorflow_starts(canonical_weights_file,
                                                                                         tmp_path):
    """A script's export_model("model.npz", "m.kerass") or AlexNet(weights="nope.npz") said its
    mistake after 4-5 s of TensorFlow's start-up; the command line says the same at once."""
    w = str(canonical_weights_file)
    calls = [("alexft.export_model('nope.npz', 'm.keras')", r"WeightsError nope\.npz: weights file not found"),
             (f"alexft.export_model({w!r}, 'm.kerass')", r"\w*Error m\.kerass: did you mean m\.keras"),
             (f"alexft.export_model({w!r}, 'm', file_format='onnx')", r"ExportOptionsError unknown export format 'onnx'"),
             (f"alexft.export_model({w!r}, 'm.tflite', quantization='int9')", r"\w+Error .*int9"),
             ("alexft.AlexNet(weights='nope.npz')", r"WeightsError nope\.npz: weights file not found"),
             (f"alexft.AlexNet(weights={w!r}, classes=10)", r"ValueError the weights .* have 1000 classes, not 10")]
    script = ("import sys, alexft\n"
              f"for call in {[call for call, _ in calls]!r}:\n"
              "    try:\n        eval(call)\n    except Exception as error:\n"
              "        print(type(error).__name__, str(error).replace(chr(10), ' '))\n"
              "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    said = done.stdout.splitlines()
    assert len(said) == len(calls) + 1, (done.stdout, done.stderr[-2000:])
    for line, (call, expected) in zip(said, calls):
        assert re.match(expected, line), (call, line)
    assert said[-1] == "False False" and not list(tmp_path.iterdir())


# --- serialisation --------------------------------------------------------------------------------

LOAD_AND_RUN = """
import json, sys
import numpy as np
import alexft  # registers alexft's layers with Keras when Keras is imported
import keras
import tensorflow as tf

folder = sys.argv[1]
views = np.load(folder + "/views.npy")
out = {}
for name in ("full.keras", "full.h5", "user.keras", "user.h5"):
    out[name] = np.asarray(keras.models.load_model(folder + "/" + name)(views)).tolist()
# A fine-tuned model keeps the names of its classes, for decode_predictions; so does one inside another.
full = keras.models.load_model(folder + "/full.h5")
out["class_names"] = [keras.models.load_model(folder + "/full.keras").class_names, full.class_names,
                      keras.models.load_model(folder + "/wrapped.h5").get_layer("alexnet").class_names]
# A base without the top scores no classes, so it names none.
out["base_class_names"] = keras.models.load_model(folder + "/user.h5").get_layer("alexnet").class_names
out["decoded"] = alexft.decode_predictions(np.asarray(full(views)), top=1, class_names=full.class_names)[0][0][1]
rebuilt = keras.models.model_from_json(open(folder + "/user.json").read())
rebuilt.load_weights(folder + "/user.weights.h5")
out["json"] = np.asarray(rebuilt(views)).tolist()
exported = tf.saved_model.load(folder + "/user_saved_model")  # kept: its variables live as long as it does
out["saved_model"] = exported.serve(tf.constant(views)).numpy().tolist()
# preprocess_input in a Lambda layer, found by its registered name, in Keras' default safe_mode.
out["lambda"] = np.asarray(keras.models.load_model(folder + "/lambda.keras")(np.load(folder + "/pixels.npy"))).tolist()
print(json.dumps(out))
"""


def test_models_save_and_load_bit_for_bit_in_a_fresh_process(ten_class_weights, tmp_path):
    path, _ = ten_class_weights
    views = photo_views()
    full = alexft.AlexNet(weights=path)
    base = alexft.AlexNet(weights=path, include_top=False, pooling="avg")
    base.trainable = False
    inputs = keras.Input((227, 227, 3))
    user = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(base(inputs)))
    expected = {"full.keras": full(views).numpy(), "user": user(views).numpy()}

    np.save(tmp_path / "views.npy", views)
    full.save(tmp_path / "full.keras")
    full.save(tmp_path / "full.h5")
    user.save(tmp_path / "user.keras")
    user.save(tmp_path / "user.h5")
    keras.Model(inputs, full(inputs), name="wrapped").save(tmp_path / "wrapped.h5")
    (tmp_path / "user.json").write_text(user.to_json())
    user.save_weights(tmp_path / "user.weights.h5")
    user.export(str(tmp_path / "user_saved_model"), verbose=False)
    # It saved as "preprocess_input", which no other process found without custom_objects.
    pixels_in = keras.Input((None, None, 3))
    with_lambda = keras.Model(pixels_in, keras.layers.Lambda(alexft.preprocess_input, output_shape=(227, 227, 3))(pixels_in))
    with_lambda.save(tmp_path / "lambda.keras")
    pixels = np.float32(photos_rgb(("chelsea",))[0][np.newaxis])
    np.save(tmp_path / "pixels.npy", pixels)

    done = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    np.testing.assert_array_equal(np.float32(loaded.pop("lambda")), with_lambda(pixels).numpy())
    assert loaded.pop("class_names") == [TEN_CLASSES] * 3
    assert loaded.pop("base_class_names") is None
    assert loaded.pop("decoded") == TEN_CLASSES[int(np.argmax(expected["full.keras"][0]))]
    for name in ("full.keras", "full.h5"):
        np.testing.assert_array_equal(np.float32(loaded.pop(name)), expected["full.keras"], err_msg=name)
    for name, outputs in loaded.items():
        np.testing.assert_array_equal(np.float32(outputs), expected["user"], err_msg=name)

    clone = keras.models.clone_model(user)
    clone.set_weights(user.get_weights())
    np.testing.assert_array_equal(clone(views).numpy(), expected["user"])
    config = full.get_layer("conv2").get_config()
    assert config["spec"]["groups"] == 2 and keras.saving.get_registered_name(type(full.get_layer("conv2"))) == \
        "alexft>GroupedConv2D"
    assert with_lambda.get_layer(index=1).get_config()["function"]["config"] == "alexft>preprocess_input"


def test_a_model_built_from_its_config_starts_from_caffes_initialisation(ten_class_weights):
    """The file's arrays are not part of the config: rebuilding gives fresh Caffe-initialised
    layers (weights come from the saved file), never an error."""
    model = alexft.AlexNet(weights=ten_class_weights[0])
    config = model.get_layer("fc8").get_config()["kernel_initializer"]
    assert config["class_name"] == "RandomNormal" and config["config"]["stddev"] == 0.01
    rebuilt = keras.Model.from_config(model.get_config())
    assert rebuilt.get_layer("fc6").kernel.numpy().std() == pytest.approx(0.005, rel=0.05)


# --- training in plain Keras ----------------------------------------------------------------------


def test_a_frozen_base_with_a_keras_head_learns_the_digits(digits_folder, canonical_weights_file, tmp_path):
    keras.utils.set_random_seed(0)
    train, val = keras.utils.image_dataset_from_directory(
        digits_folder, validation_split=0.3, subset="both", seed=1, image_size=(256, 256), batch_size=32,
        label_mode="int", verbose=False)
    classes = len(train.class_names)
    train = train.map(lambda images, labels: (alexft.preprocess_input(images), labels))
    val = val.map(lambda images, labels: (alexft.preprocess_input(images), labels))

    base = alexft.AlexNet(weights=canonical_weights_file, include_top=False, last_layer="fc7")
    base.trainable = False
    frozen_before = [weight.numpy().copy() for weight in base.weights]
    inputs = keras.Input((227, 227, 3))
    features = keras.layers.LayerNormalization(name="standardise")(base(inputs, training=False))
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="head")(features))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best = tmp_path / "best.keras"
    history = model.fit(train, validation_data=val, epochs=4, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=3, restore_best_weights=True)])

    print("val accuracy by epoch:", history.history["val_accuracy"])
    assert max(history.history["val_accuracy"]) >= 0.5, history.history  # chance is 0.1
    for before, after in zip(frozen_before, base.weights):
        np.testing.assert_array_equal(after.numpy(), before)
    reloaded = keras.models.load_model(best)
    assert reloaded.evaluate(val, verbose=0)[1] == pytest.approx(max(history.history["val_accuracy"]), abs=1e-6)


# --- API without traps ----------------------------------------------------------------------------


def test_urls_given_as_strings_are_fetched_as_on_the_command_line(predictor, tmp_path):
    from http_server import serving

    photo = photo_paths()["chelsea"]
    with serving({"/cat.png": ("ok", photo.read_bytes())}) as url:
        fetched = list(alexft.classify(predictor, [f"{url}/cat.png", photo, f"{url}/gone.png"], top=3))
        assert [result["path"] for result in fetched] == [f"{url}/cat.png", str(photo), f"{url}/gone.png"]
        assert fetched[0]["predictions"] == fetched[1]["predictions"]
        assert fetched[2]["error"].startswith(f"{url}/gone.png: ") and "404" in fetched[2]["error"]
        written, skipped = alexft.extract_features(predictor.model, [f"{url}/cat.png"], "fc7", tmp_path / "f.npz")
    assert written == 1 and not skipped
    with np.load(tmp_path / "f.npz") as stored:
        assert stored["paths"].tolist() == [f"{url}/cat.png"]


def test_one_path_or_a_folder_works_wherever_paths_are_taken(predictor, tmp_path):
    photo = photo_paths()["chelsea"]
    for given in (str(photo), photo):
        results = list(alexft.classify(predictor, given))
        assert len(results) == 1 and results[0]["path"] == str(photo) and "predictions" in results[0]
    folder = tmp_path / "pictures"
    (folder / "inner").mkdir(parents=True)
    for name in ("chelsea", "coffee"):
        (folder / "inner" / f"{name}.png").write_bytes(photo_paths()[name].read_bytes())
    assert [r["path"] for r in alexft.classify(predictor, folder)] == [str(folder / "inner" / "chelsea.png"),
                                                                       str(folder / "inner" / "coffee.png")]
    assert len(list(alexft.classify(predictor, [photo, folder]))) == 3
    for wrong in (42, b"photo.png", None, [photo, 3]):
        with pytest.raises(TypeError, match="expected a path"):
            list(alexft.classify(predictor, wrong))
    with pytest.raises(TypeError, match="expected a path"):
        alexft.find_images(7)
    pixels = photos_rgb()[0]  # an image in memory where files go: said in one line, not printed in full
    for wrong in (pixels, [pixels]):
        with pytest.raises(TypeError, match=r"got pixels \(an array\): for images in memory, use "
                                            r"alexft.preprocess_input") as refused:
            list(alexft.classify(predictor, wrong))
        assert len(str(refused.value)) < 200
    assert len(list(alexft.classify(predictor, np.array([str(photo)])))) == 1  # paths as a features file holds them



def test_images_in_memory_given_where_files_go_are_refused_with_what_takes_them(predictor):
    """A user tried image_views on an array and a PIL image: "'ndarray' object has no attribute
    'read_bytes'"; classify on a PIL image named no way forward."""
    photo = photo_paths()["chelsea"]
    with Image.open(photo) as opened:
        pil = opened.copy()
    for wrong, said in ((photos_rgb()[0], r"pixels \(an array\)"), (pil, "a PIL image")):
        with pytest.raises(TypeError, match=f"got {said}: for images in memory, use alexft.preprocess_input"):
            alexft.image_views(wrong)
        for given in (wrong, [wrong]):
            with pytest.raises(TypeError, match=f"got {said}: for images in memory, use alexft.preprocess_input"):
                list(alexft.classify(predictor, given))
    with pytest.raises(TypeError, match="got int$"):
        alexft.image_views(7)
    with pytest.raises(TypeError, match="got a tensor: for images in memory, use alexft.preprocess_input"):
        list(alexft.classify(predictor, tf.constant(photos_rgb()[0])))
    with open(photo, "rb") as handle, pytest.raises(TypeError, match=f"got an open file: give its name \\('{photo}'\\)"):
        list(alexft.classify(predictor, handle))  # (it went through the file's lines as paths)


def test_a_folder_without_images_is_a_python_warning_not_silence(predictor, tmp_path):
    """The command line warns of such a folder; from Python, classify gave [] in silence."""
    empty, phone = tmp_path / "empty", tmp_path / "phone"
    empty.mkdir()
    phone.mkdir()
    (phone / "IMG_0001.HEIC").write_bytes(b"not decoded")
    for folder, said in ((empty, "no images in this folder"),
                         (phone, "holds only photos in formats alexft does not read (e.g. IMG_0001.HEIC)")):
        with pytest.warns(UserWarning, match=f"^{re.escape(str(folder))}: {re.escape(said)}") as caught:
            assert list(alexft.classify(predictor, folder)) == []
        assert caught[0].filename == __file__  # the caller's line, not alexft's
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder with images says nothing
        assert len(list(alexft.classify(predictor, photo_paths()["chelsea"].parent))) > 0


def test_extract_features_of_folders_without_images_is_an_error_and_writes_nothing(predictor, tmp_path):
    """extract_features on an empty folder warned, then wrote a file of 0 features that looked
    like a result; the command refuses the same input. A folder among others that do hold
    images is still a warning; an empty list (a shard with nothing to do) still writes a file
    of none, which joins the other shards' files."""
    from alexft.data import DataError
    empty, phone = tmp_path / "empty", tmp_path / "phone"
    empty.mkdir()
    phone.mkdir()
    (phone / "IMG_0001.HEIC").write_bytes(b"not decoded")
    for given, said in ((empty, f"{empty}: no images in this folder"),
                        ([empty, phone], f"{empty}: no images in this folder; {phone}: holds only photos in formats "
                                         "alexft does not read (e.g. IMG_0001.HEIC)")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once, in the error
            with pytest.raises(DataError, match=f"^{re.escape(said)}"):
                alexft.extract_features(predictor, given, "fc8", tmp_path / "f.npz")
        assert not (tmp_path / "f.npz").exists()
    with pytest.warns(UserWarning, match=f"^{re.escape(str(empty))}: no images in this folder") as caught:
        written, _ = alexft.extract_features(predictor, [empty, photo_paths()["chelsea"]], "fc8", tmp_path / "f.npz")
    assert written == 1 and caught[0].filename == __file__
    assert alexft.extract_features(predictor, [], "fc8", tmp_path / "none.npz") == (0, {})
    with np.load(tmp_path / "none.npz") as none:
        assert none["features"].shape == (0, 1000)


def test_labels_given_to_extract_features_are_checked_before_any_work(predictor, small_digits_folder, tmp_path,
                                                                     monkeypatch):
    """Seen by a user: too many labels were dropped unsaid, too few failed with numpy's
    IndexError after the whole pass, and labels without class names stored the string 'None'."""
    images = sorted((small_digits_folder / "digit_3").iterdir())[:2]
    computed = []
    monkeypatch.setattr("alexft.features.layer_outputs", lambda *args: computed.append(1) or iter(()))
    refusals = [
        ([3, 3, 3], None, ValueError, r"^labels: 3 given for 2 path\(s\); give one per image$"),
        ([3], None, ValueError, r"^labels: 1 given for 2 path\(s\); give one per image$"),
        ([3.0, 3.5], None, TypeError, r"^labels must be whole numbers \(class indices\); got float64 values such as 3\.0$"),
        ([3, 12], [f"digit_{i}" for i in range(10)], ValueError, r"^labels: 12 names no class; class_names holds 10 "
                                                                  r"\(0 to 9\)$"),
    ]
    for labels, class_names, error, message in refusals:
        with pytest.raises(error, match=message):
            alexft.extract_features(predictor, images, "fc8", tmp_path / "f.npz", labels=labels, class_names=class_names)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(small_digits_folder))}: is a folder; with labels, give one "
                                         r"image file per label \(or leave labels out"):
        alexft.extract_features(predictor, [small_digits_folder], "fc8", tmp_path / "f.npz", labels=[0])
    # One image named twice under two labels (a helper's trial stored both rows, one file, two classes).
    with pytest.raises(ValueError, match=rf"^{re.escape(str(images[0]))}: given twice, with labels 3 and 5; one image "
                                         "takes one label$"):
        alexft.extract_features(predictor, [*images, images[0]], "fc8", tmp_path / "f.npz", labels=[3, 4, 5])
    assert not computed and not (tmp_path / "f.npz").exists()
    monkeypatch.undo()
    written, _ = alexft.extract_features(predictor, images, "fc8", tmp_path / "f.npz", labels=[3, 5])
    with np.load(tmp_path / "f.npz") as stored:
        assert written == 2 and stored["labels"].tolist() == [3, 5] and "class_names" not in stored.files
    # Named twice under one label: read once, as without labels (the rows had depended on labels= being given).
    said = []
    written, _ = alexft.extract_features(predictor, [images[0], images[1], images[0]], "fc8", tmp_path / "f.npz",
                                         labels=[3, 5, 3], say=said.append)
    with np.load(tmp_path / "f.npz") as stored:
        assert written == 2 and stored["labels"].tolist() == [3, 5]
        assert stored["paths"].tolist() == [str(images[0]), str(images[1])]
    assert said == [f"each image is read once: 1 input named again or inside a folder also given is left out (e.g. "
                    f"{images[0]}, named again)"]  # as the same image named twice without labels is said


def test_extract_features_takes_a_predictor_and_labels_a_class_folder_as_the_command_does(
        predictor, small_digits_folder, tmp_path):
    """Seen by a user: extract_features(predictor, ...) failed with "'Predictor' object has no
    attribute 'input'", and a class folder gave no labels where `alexft features` stores them."""
    from alexft.data import class_folders, list_labelled

    written, skipped = alexft.extract_features(predictor, small_digits_folder, "fc7", tmp_path / "f.npz")
    expected = list_labelled(small_digits_folder, class_folders(small_digits_folder))
    assert written == len(expected.paths) and not skipped
    with np.load(tmp_path / "f.npz") as stored:
        assert stored["class_names"].tolist() == class_folders(small_digits_folder) == [f"digit_{i}" for i in range(10)]
        assert stored["paths"].tolist() == [str(path) for path in expected.paths]
        np.testing.assert_array_equal(stored["labels"], expected.labels)
        # every image's label is its folder's place among the classes
        assert [stored["class_names"][label] for label in stored["labels"]] == \
            [Path(path).parent.name for path in stored["paths"]]
        first_three = stored["features"][:3]
    alexft.extract_features(predictor.model, expected.paths[:3], "fc7", tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as plain:
        assert set(plain.files) == {"features", "paths", "recipe"}  # a list of files has no classes
        np.testing.assert_allclose(plain["features"], first_three, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match=r"^expected a Predictor \(alexft.load_predictor\) or an alexft Keras model, got "
                                        r"str 'model.npz': load the weights first, alexft.load_predictor\('model.npz'\)$"):
        alexft.extract_features("model.npz", expected.paths[:1], "fc7", tmp_path / "h.npz")
    # A weights file given as the predictor: classify's AttributeError ('str' object has no
    # attribute 'preprocessing') came only when its results were first asked for.
    with pytest.raises(TypeError, match=r"got PosixPath '.*w.npz': load the weights first, alexft.load_predictor\("):
        alexft.classify(tmp_path / "w.npz", expected.paths[:1])
    with pytest.raises(TypeError, match=r"got dict$"):
        alexft.evaluate({}, expected.paths[:1])
    # Nothing usable: (0, {...}) came back without a word, easy to miss in a notebook.
    with pytest.warns(UserWarning, match=r"^no features written to .*h.npz: none of the 2 images could be used \(e.g. "
                                         r".*(nothere|nor).png: file not found\)$"):
        count, skipped = alexft.extract_features(predictor, [tmp_path / "nothere.png", tmp_path / "nor.png"], "fc7",
                                                 tmp_path / "h.npz")
    assert count == 0 and len(skipped) == 2 and not (tmp_path / "h.npz").exists()
    with pytest.raises(ValueError, match=r"^no layer 'fc77' in the model; choose one of conv1, norm1, pool1, conv2, "
                                         r"norm2, pool2, conv3, conv4, conv5, pool5, fc6, fc7, fc8$"):
        alexft.extract_features(predictor, expected.paths[:1], "fc77", tmp_path / "h.npz")  # Keras' error listed drop6
    with pytest.raises(ValueError, match=r"; choose one of conv1, .*, fc8, prob$"):  # alexft.AlexNet's softmax too
        alexft.extract_features(alexft.AlexNet(weights=None), expected.paths[:1], "fc9", tmp_path / "h.npz")
    # AlexNet inside a model of the user's: its layers are one level down, and said so (a
    # helper got "choose one of input_layer, alexnet").
    image = keras.Input((227, 227, 3))
    wrapped = keras.Model(image, alexft.AlexNet(weights=None)(image), name="mine")
    inside = r"^no layer 'fc7' in 'mine' itself: it is inside its 'alexnet'; give that model instead: " \
             r"model.get_layer\('alexnet'\)$"
    with pytest.raises(ValueError, match=inside):
        alexft.truncated(wrapped, "fc7")
    with pytest.raises(ValueError, match=inside):  # (it named truncated(...), which this call does not take)
        alexft.extract_features(wrapped, expected.paths[:1], "fc7", tmp_path / "h.npz")
    count, _ = alexft.extract_features(wrapped.get_layer("alexnet"), expected.paths[:1], "fc7", tmp_path / "h.npz")
    assert count == 1
    assert alexft.truncated(wrapped.get_layer("alexnet"), "fc7").output.shape == (None, 4096)


TENSORFLOW_FREE = """
import sys
import numpy as np
import alexft

folder = sys.argv[1]
alexft.describe_weights(folder + "/model.npz")
alexft.load_weights(folder + "/model.npz")
alexft.convert_weights(folder + "/model.npz", folder + "/copy.npz")
alexft.find_images(folder)
alexft.imagenet_class_names()
alexft.imagenet_wordnet_ids()
for part in ("a", "b"):
    np.savez(folder + f"/{part}.npz", features=np.ones((2, 3), np.float32), paths=np.array([part + "1", part + "2"]))
alexft.merge_features([folder + "/a.npz", folder + "/b.npz"], folder + "/merged.npz")
alexft.preprocess_input(np.zeros((300, 200, 3), np.uint8))
alexft.decode_predictions(np.ones((1, 1000)))
print(sorted(name for name in ("tensorflow", "keras") if name in sys.modules))
"""


def test_tools_that_need_no_network_do_not_import_tensorflow(ten_class_weights, tmp_path):
    (tmp_path / "model.npz").write_bytes(ten_class_weights[0].read_bytes())
    done = subprocess.run([sys.executable, "-c", TENSORFLOW_FREE, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[]"]
    with np.load(tmp_path / "merged.npz") as merged:
        assert merged["paths"].tolist() == ["a1", "a2", "b1", "b2"]


def test_several_predictors_in_one_process_raise_no_retracing_warning():
    import logging

    from alexft.model import InferenceFunction, build_alexnet

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        views = np.zeros((2, 227, 227, 3), np.float32)
        for _ in range(6):  # TensorFlow warns from the fifth trace of one code object on
            InferenceFunction(build_alexnet(num_classes=3))(views)
        ours = [record.getMessage() for record in records if "retracing" in record.getMessage()]
        for size in range(1, 7):  # a function of the user's retraced on every call still warns
            tf.function(lambda x: x * 2)(tf.zeros([size]))
    finally:
        logger.removeHandler(handler)
    assert ours == []
    assert any("triggered tf.function retracing" in record.getMessage() for record in records)


def test_a_global_mixed_precision_policy_leaves_float32_inference_and_exports_in_float32(canonical_weights_file,
                                                                                         tmp_path):
    """A user who set keras.mixed_precision's global policy for their own model got float16
    arithmetic from load_predictor (precision="float32") and Cast-to-half ops in export_model's
    SavedModel, without a word. alexft's own float32 paths pin float32; AlexNet() as a base for
    the user's model follows the policy, as keras.applications do."""
    v = np.random.default_rng(0).standard_normal((2, 227, 227, 3)).astype(np.float32) * 50
    expected = alexft.load_predictor(canonical_weights_file).probabilities(v)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        predictor = alexft.load_predictor(canonical_weights_file)
        exported = alexft.export_model(canonical_weights_file, tmp_path / "served")
        base = alexft.AlexNet(weights=None, include_top=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    weighted = [layer for layer in predictor.model.layers if layer.weights]
    assert {layer.compute_dtype for layer in weighted} == {"float32"}
    np.testing.assert_array_equal(predictor.probabilities(v), expected)
    graph = tf.saved_model.load(str(exported)).signatures["serving_default"].graph.as_graph_def()
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    assert not [node.name for node in nodes if any(value.type == tf.float16.as_datatype_enum
                                                   for value in node.attr.values())]
    assert base.get_layer("conv1").compute_dtype == "float16"


@pytest.mark.parametrize("first_use", ["alexft.build_alexnet", "network(weights=None)"])
def test_a_ctrl_c_during_the_first_import_of_tensorflow_is_said_plainly_afterwards(first_use, tmp_path):
    """A user's Ctrl-C while alexft.build_alexnet imported TensorFlow left it half-imported: every later
    use failed with "module 'matplotlib' has no attribute 'artist'" or "Name tf.RaggedTensorSpec
    has already been registered". Later uses now say to restart the interpreter. The error
    classes stay reachable: `except alexft.TrainingInterrupted:` around the first use raised
    that RuntimeError itself, hiding the Ctrl-C. A function taken before (`network`, as a
    notebook's second run of a cell calls alexft.AlexNet) imports TensorFlow in its call, where
    a second try said "Registering two gradient with name 'AccumulateNV2'!": refused plainly
    too, as is the user's own `import tensorflow`."""
    script = tmp_path / "stopped.py"
    script.write_text(
        "import _thread, signal, threading, time\nimport alexft\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # (a suite run in the background ignores SIGINT)\n"
        "network = alexft.AlexNet  # (imports no TensorFlow yet)\n"
        "threading.Timer(0.3, _thread.interrupt_main).start()  # TensorFlow's import takes seconds\n"
        f"try:\n    {first_use}\nexcept alexft.TrainingInterrupted:\n    print('training interrupted')\n"
        "except KeyboardInterrupt:\n    print('interrupted')\n"
        "time.sleep(0.5)\n"
        "for again in ('network(weights=None)', 'import tensorflow', 'alexft.load_predictor'):\n"
        "    try:\n        exec(again)\n    except (ImportError, RuntimeError) as error:\n"
        "        print(error, isinstance(error, ImportError) and isinstance(error, RuntimeError))\n"
        "print(alexft.TrainingError.__name__, alexft.AlexftError.__name__)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert lines[0] == "interrupted", done.stderr
    said = ("in this interpreter was interrupted (Ctrl-C), and such libraries cannot be imported again in it: restart the "
            "interpreter (in a notebook, the kernel)")
    for line, refused in zip(lines[1:4], ("(keras|tensorflow)", "tensorflow", "alexft.load_predictor")):
        # One kind of error wherever it comes from, so that either `except` catches it: an import
        # had raised ImportError and alexft's attributes RuntimeError.
        assert re.match(rf"{refused}: an earlier import of (numpy, )?tensorflow", line) and line.endswith(f"{said} True"), lines
    assert lines[4:] == ["TrainingError AlexftError"], done.stderr


def test_a_keras_model_where_weights_go_and_a_class_count_of_zero_are_said_in_alexft_terms(canonical_weights_file,
                                                                                           monkeypatch, tmp_path):
    """export_model(model, ...) and load_predictor(model) said "expected str, bytes or os.PathLike
    object, not Functional" from pathlib; build_alexnet(num_classes=0) Keras' "invalid value for
    units"; AlexNet(weights="ImageNet") looked for a file named ImageNet."""
    model = alexft.build_alexnet(num_classes=3)
    said = (r"^weights: expected the path of a weights file or a WeightSet \(alexft.load_weights\), not Functional "
            r"\(a Keras model: alexft.weights_from_model\(model\) gives its WeightSet\)$")
    for call in (lambda: alexft.export_model(model, tmp_path / "m.tflite"), lambda: alexft.load_predictor(model)):
        with pytest.raises(TypeError, match=said):
            call()
    assert not (tmp_path / "m.tflite").exists()
    with pytest.raises(ValueError, match="^num_classes must be a whole number of at least 1; got 0$"):
        alexft.build_alexnet(num_classes=0)
    monkeypatch.setenv("ALEXFT_WEIGHTS", str(canonical_weights_file))
    monkeypatch.chdir(tmp_path)
    assert alexft.AlexNet(weights="ImageNet").get_layer("fc8").kernel.shape == (4096, 1000)


@pytest.mark.parametrize("log_level", [None, "0"], ids=["TF_CPP_MIN_LOG_LEVEL unset", "TF_CPP_MIN_LOG_LEVEL=0"])
def test_the_first_use_in_python_keeps_tensorflows_start_up_lines_back_unless_asked(canonical_weights_file, log_level):
    """A script's first alexft.AlexNet printed TensorFlow's C++ start-up lines ("I0000 ... oneDNN
    custom operations are on", "E0000 ... cuInit") as the commands no longer do. Its own import
    of TensorFlow after alexft's is quiet too, and still free to choose the devices. A user who
    asks for TensorFlow's logging (level 0 or 1) still gets the lines."""
    import os

    script = ("import numpy as np, alexft\n"
              "import tensorflow as tf\n"
              "tf.config.set_visible_devices([], 'GPU')  # before the runtime starts, as TensorFlow's guide does\n"
              f"model = alexft.AlexNet(weights={str(canonical_weights_file)!r})\n"
              "print(model(np.zeros((1, 227, 227, 3), np.float32)).shape)\n")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    if log_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = log_level
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout == "(1, 1000)\n", done.stderr
    start_up = [line for line in done.stderr.splitlines() if re.match(r"[IWE]0000 ", line)]
    if log_level is None:
        assert start_up == [], done.stderr
    else:
        assert any("oneDNN custom operations are on" in line for line in start_up), done.stderr


def test_a_weight_set_passed_in_stays_whole_and_unchanged(canonical_weights_file, predictor):
    """A model built from a set took its arrays: AlexNet(weights=w, include_top=False) left w
    with fc6-fc8 only, and a Predictor built from it next started from random layers, silently.
    A caller's set is copied; a model trained in place leaves it as it was."""
    w = alexft.load_weights(canonical_weights_file)
    before = {name: [array.copy() for array in arrays] for name, arrays in w.params.items()}
    alexft.AlexNet(weights=w, include_top=False)
    model = alexft.AlexNet(weights=w)
    views = np.random.default_rng(0).standard_normal((2, 227, 227, 3)).astype(np.float32) * 50
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.fit(views, np.array([1, 2]), epochs=1, verbose=0)
    assert sorted(w.params) == sorted(before)
    for name, arrays in before.items():
        for kept, original in zip(w.params[name], arrays):
            np.testing.assert_array_equal(kept, original, err_msg=name)
    np.testing.assert_array_equal(alexft.load_predictor(w).probabilities(views), predictor.probabilities(views))


def test_a_process_without_stderr_can_use_alexft(canonical_weights_file):
    """`python script.py 2>&-` (or a daemon): import alexft, then tensorflow, failed with
    "'NoneType' object has no attribute 'flush'" where holding back the start-up lines."""
    import shlex

    script = ("import numpy as np, alexft\n"
              "import tensorflow as tf\n"
              "print(tf.ones(1).numpy())\n"
              f"model = alexft.AlexNet(weights={str(canonical_weights_file)!r})\n"
              "print(model(np.zeros((1, 227, 227, 3), np.float32)).shape)\n")
    done = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} 2>&-"],
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout) == (0, "[1.]\n(1, 1000)\n"), (done.stdout, done.stderr)


def test_alexnets_keras_model_scores_as_the_predictor_does_wherever_a_predictor_goes(canonical_weights_file,
                                                                                      predictor, tmp_path):
    """Predictor(model=AlexNet(...)) put a second softmax on the model's probabilities (the top
    one fell from 0.118 to 0.102, unsaid); classify(model, ...) and evaluate(model, ...) failed
    with "'ClassifierModel' object has no attribute 'preprocessing'"."""
    model = alexft.AlexNet(weights=canonical_weights_file)
    photo = photo_paths()["chelsea"]
    views = alexft.image_views(photo)
    expected = predictor.probabilities(views)
    np.testing.assert_allclose(alexft.Predictor(model=model, class_names=model.class_names).probabilities(views),
                               expected, rtol=1e-5, atol=1e-7)
    logits = alexft.AlexNet(weights=canonical_weights_file, classifier_activation=None)
    np.testing.assert_allclose(alexft.Predictor(logits, predictor.class_names).probabilities(views), expected,
                               rtol=1e-5, atol=1e-7)
    [result] = alexft.classify(model, [photo], top=3)
    assert [row["index"] for row in result["predictions"]] == list(np.argsort(-expected[0], kind="stable")[:3])
    (tmp_path / "data" / "tabby, tabby cat").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "data" / "tabby, tabby cat" / "cat.png"), cv2.imread(str(photo)))
    assert alexft.evaluate(model, tmp_path / "data")["images"] == 1
    # Inside a model of the user's (a re-trial: a second softmax again, and "class 0" for its names).
    three = alexft.load_weights(canonical_weights_file)
    three.params["fc8"] = (three.params["fc8"][0][:, :3].copy(), three.params["fc8"][1][:3].copy())
    three.class_names = ["ant", "bee", "cow"]
    inner = alexft.AlexNet(weights=three)
    inputs = keras.Input((227, 227, 3))
    for outer in (keras.Model(inputs, inner(inputs)), keras.Sequential([keras.Input((227, 227, 3)), inner])):
        scored = alexft.Predictor(outer)  # the class names are the model's own
        assert scored.class_names == ["ant", "bee", "cow"]
        np.testing.assert_allclose(scored.probabilities(views), alexft.load_predictor(three).probabilities(views),
                                   rtol=1e-5, atol=1e-7)


def test_what_else_the_process_writes_while_tensorflow_starts_is_kept():
    """Holding TensorFlow's start-up lines back after `import alexft` also dropped what the
    script's other threads logged meanwhile (a re-trial lost 21 of 40 lines)."""
    import os

    script = ("import sys, threading, time, alexft\n"
              "def say():\n"
              "    for i in range(30):\n"
              "        print(f'user line {i}', file=sys.stderr, flush=True); time.sleep(0.05)\n"
              "speaker = threading.Thread(target=say); speaker.start(); time.sleep(0.1)\n"
              "import tensorflow\n"
              "speaker.join()\n")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert sorted(lines, key=lambda line: int(line.split()[-1])) == [f"user line {i}" for i in range(30)], done.stderr


def test_a_start_up_line_written_inside_a_users_line_is_taken_out_of_it():
    """Python writes print()'s text and its newline in two calls on an unbuffered stderr, so
    TensorFlow's line could land between them: "user line 3I0000 ... operations." was kept
    whole (the test above failed 11 runs in 12 on Zen 5)."""
    from alexft.quiet import _without_tensorflows_start_up

    guard = ("I0000 00:00:1796453572.719014    3357 cpu_feature_guard.cc:210] This TensorFlow binary is optimized "
             "to use available CPU instructions in performance-critical operations.\n")
    held = ("user line 2\n" + "user line 3" + guard + "To enable the following instructions: AVX512F, in other "
            "operations, rebuild TensorFlow.\n" + "\n" + "WARNING: All log messages before absl::InitializeLog() "
            "is called are written to STDERR\n" + "user line 4\n" + "E0000 00:00:1.5 12 cuda_executor.cc:1] cuInit\n")
    assert _without_tensorflows_start_up(held) == "user line 2\nuser line 3\nuser line 4\n"
    assert _without_tensorflows_start_up("I0 said: see foo.cc:12] for why\n") == "I0 said: see foo.cc:12] for why\n"


def test_weights_from_model_finds_alexnet_inside_a_model_of_the_users(canonical_weights_file):
    """weights_from_model(wrapped) failed with Keras' "No such layer: conv1. Existing layers are:
    ['input_layer_1', 'alexnet']": the advice given for a .keras file of such a model led nowhere."""
    three = alexft.load_weights(canonical_weights_file)
    three.params["fc8"] = (three.params["fc8"][0][:, :3].copy(), three.params["fc8"][1][:3].copy())
    three.class_names = ["ant", "bee", "cow"]
    inner = alexft.AlexNet(weights=three)
    inputs = keras.Input((227, 227, 3))
    taken = alexft.weights_from_model(keras.Model(inputs, inner(inputs)))
    assert taken.class_names == ["ant", "bee", "cow"]
    for name, (kernel, bias) in three.params.items():
        np.testing.assert_array_equal(taken.params[name][0], kernel, err_msg=name)
        np.testing.assert_array_equal(taken.params[name][1], bias, err_msg=name)
    with pytest.raises(ValueError, match=r"^sequential\w*: holds no AlexNet layers \(conv1, .*fc8\), nor a model with "
                                         r"them: weights_from_model takes a model alexft built"):
        alexft.weights_from_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    # Part of AlexNet, alone or under a head of the user's (docs/transfer-learning's classifier):
    # it was said to hold no AlexNet layers at all.
    features = alexft.AlexNet(weights=None, include_top=False, last_layer="fc7")
    with pytest.raises(ValueError, match=r"^alexnet: holds AlexNet's layers without fc8: weights_from_model takes the "
                                         r"whole network, up to fc8 \(alexft.AlexNet with include_top=True\); save a "
                                         r"model with a head of your own as a .keras file \(model.save\)$"):
        alexft.weights_from_model(features)
    head = keras.Model(features.input, keras.layers.Dense(3, name="mine")(features.output), name="classifier")
    with pytest.raises(ValueError, match=r"^classifier: holds AlexNet's layers without fc8: "):
        alexft.weights_from_model(head)
    convolutions = alexft.AlexNet(weights=None, include_top=False)
    with pytest.raises(ValueError, match=r"^functional\w*: holds AlexNet's layers without fc6, fc7, fc8: "):
        alexft.weights_from_model(keras.Model(convolutions.input, convolutions(convolutions.input)))


def test_images_too_small_for_pool5_are_refused_not_a_crash():
    """A model of any input size (`input_shape=(None, None, 3)`) called on 38x38 images killed
    the process (SIGFPE in pool5's empty window: a notebook's kernel died); 39-66 pixels
    silently gave features below the documented 67. Run in a process of its own, as it crashed."""
    script = ("import numpy as np, alexft\n"
              "model = alexft.AlexNet(weights=None, include_top=False, input_shape=(None, None, 3), pooling='avg')\n"
              "print(tuple(model(np.ones((1, 70, 90, 3), 'float32')).shape))\n"
              "for side in (38, 60):\n"
              "    try:\n"
              "        model(np.ones((1, side, side, 3), 'float32'))\n"
              "    except ValueError as error:\n"
              "        print([line for line in str(error).splitlines() if 'pixels' in line])\n"
              "    try:\n"
              "        model.predict(np.ones((2, side, 80, 3), 'float32'), verbose=0)\n"
              "    except Exception as error:\n"
              "        print('AlexNet needs at least 67x67 pixels' in str(error))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "(1, 256)",
        "['\\x1b[1mimages of 38x38 pixels: AlexNet needs at least 67x67 pixels\\x1b[0m']", "True",
        "['\\x1b[1mimages of 60x60 pixels: AlexNet needs at least 67x67 pixels\\x1b[0m']", "True"]


def test_a_227_model_refuses_other_sizes_also_after_its_first_call(canonical_weights_file):
    """Keras checks a call against the model's input only until a second shape relaxes its
    traced function: after one predict at 227, a 224x224 batch (keras.applications' size) was
    scored without a word, and 300x300 failed deep in fc6."""
    model = alexft.AlexNet(weights=canonical_weights_file)
    assert model.predict(np.zeros((1, 227, 227, 3), "float32"), verbose=0).shape == (1, 1000)
    for side in (224, 300):  # an array: said in one line before Keras batches it (it was pages of TensorFlow's)
        with pytest.raises(ValueError, match=rf"^images of {side}x{side} pixels: it takes 227x227 pixels "
                                             r"\(preprocess_input makes them\)$"):
            model.predict(np.zeros((1, side, side, 3), "float32"), verbose=0)
    # Batches whose sides are known only when they come: checked in the graph.
    batches = tf.data.Dataset.from_generator(lambda: iter([np.zeros((1, 224, 224, 3), "float32")]),
                                             output_signature=tf.TensorSpec((None, None, None, 3), tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"do not suit the model: it takes 227x227 pixels "
                                                              r"\(preprocess_input makes them\)"):
        model.predict(batches, verbose=0)
    # XLA drops a graph's assertions, but Keras checks a jit-compiled model's batches itself (the
    # docs had said such a model took any size).
    model.compile(jit_compile=True)
    for given in (np.zeros((1, 224, 224, 3), "float32"), batches):
        with pytest.raises(ValueError, match=r"(224x224 pixels: it takes 227x227|expected shape=\(None, 227, 227, 3\), "
                                             r"found shape=\(1, 224, 224, 3\))"):
            model.predict(given, verbose=0)


def test_whole_number_pixels_are_refused_unless_the_model_holds_the_preprocessing(canonical_weights_file):
    """uint8 pixels as read, never through preprocess_input, were scored as nonsense without a
    word (a helper's trial); a model with the preprocessing inside takes them."""
    model = alexft.AlexNet(weights=canonical_weights_file)
    pixels = np.zeros((1, 227, 227, 3), "uint8")
    said = r"^images of uint8 pixels: the model takes preprocessed views, float \(alexft.preprocess_input makes them"
    for call in (lambda: model.predict(pixels, verbose=0), lambda: model(pixels), lambda: model(tf.constant(pixels)),
                 lambda: model.predict(pixels.astype("int32"), verbose=0)):
        with pytest.raises(ValueError, match=said.replace("uint8", "u?int(8|32)")):
            call()
    raw = keras.Input((None, None, 3), dtype="uint8")
    inside = alexft.AlexNet(weights=canonical_weights_file, input_tensor=alexft.preprocess_input(raw))
    photo = np.random.default_rng(0).integers(0, 256, (1, 300, 280, 3)).astype("uint8")
    np.testing.assert_allclose(inside.predict(photo, verbose=0), inside(photo).numpy(), atol=1e-6)


def test_the_python_api_reads_an_image_named_twice_once(predictor, small_digits_folder, tmp_path):
    """classify(p, [x, x]) gave two results, and extract_features(p, [cl, cl]) a file of each row
    twice, without labels: only the command line read each image once."""
    photo = sorted(small_digits_folder.glob("*/*.png"))[0]
    with pytest.warns(UserWarning, match=r"^each image is read once: 1 input named again or inside a folder also given is left "):
        results = list(alexft.classify(predictor, [photo, photo.parent / ".." / photo.parent.name / photo.name]))
    assert [result["path"] for result in results] == [str(photo)]
    with pytest.warns(UserWarning, match=r"^each image is read once"):
        count, _ = alexft.extract_features(predictor, [small_digits_folder, str(small_digits_folder) + "/"], "fc8",
                                           tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as stored:
        assert count == 60 == len(set(stored["paths"])) and len(stored["labels"]) == 60


def test_a_base_without_the_top_takes_its_layers_from_weights_and_classes_may_be_numpys_integers(
        canonical_weights_file, canonical_params):
    """A helper's assign_weights(AlexNet(weights=None, include_top=False), load_weights(W)) met
    Keras' "No such layer: fc6"; classes=np.int64(10), as len(np.unique(labels)) gives, was
    refused as not a whole number."""
    base = alexft.AlexNet(weights=None, include_top=False)
    assert alexft.assign_weights(base, alexft.load_weights(canonical_weights_file)) == \
        ["conv1", "conv2", "conv3", "conv4", "conv5"]
    np.testing.assert_array_equal(base.get_layer("conv5").kernel.numpy(), canonical_params["conv5"][0])
    assert alexft.assign_weights(base, str(canonical_weights_file)) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    with pytest.raises(TypeError, match=r"takes a WeightSet \(alexft.load_weights\(path\)\) or a weights file's path, not dict"):
        alexft.assign_weights(base, {})
    nested = keras.Sequential([alexft.AlexNet(weights=None, include_top=False, last_layer="conv2"),
                               keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    assert alexft.assign_weights(nested, alexft.load_weights(canonical_weights_file), skip=["conv1"]) == ["conv2"]
    np.testing.assert_array_equal(nested.layers[0].get_layer("conv2").bias.numpy(), canonical_params["conv2"][1])
    with pytest.raises(ValueError, match=r"holds no AlexNet layers \(conv1, .*\), nor a model with them: assign_weights "):
        alexft.assign_weights(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
                              alexft.load_weights(canonical_weights_file))
    model = alexft.AlexNet(weights=None, classes=np.int64(10))
    assert model.output.shape[-1] == 10 and type(model.get_layer("fc8").units) is int
    for wrong_type in (np.float64(10), "10", 10.0):  # a wrong type is Python's TypeError (docs/commands.md)
        with pytest.raises(TypeError, match=f"^classes must be a positive whole number; got {re.escape(repr(wrong_type))}$"):
            alexft.AlexNet(weights=None, classes=wrong_type)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", None])
def test_a_predictor_takes_a_models_own_scores_and_puts_a_softmax_on_logits_only(ten_class_weights, activation):
    """A sigmoid (multi-label) model's scores were put through a second softmax, summing to 1."""
    path, params = ten_class_weights
    model = alexft.AlexNet(weights=path, classifier_activation=activation)
    views = photo_views()
    logits = reference.forward(params, views)
    expected = {"softmax": reference.softmax(logits), "sigmoid": 1 / (1 + np.exp(-logits)),
                None: reference.softmax(logits)}[activation]
    got = alexft.Predictor(model).probabilities(views)
    assert_close(got, expected)
    if activation == "sigmoid":
        assert not np.allclose(got.sum(axis=1), 1, atol=1e-3)  # the case this is about


def test_extract_features_says_which_images_it_left_out_when_it_wrote_the_others(predictor, tmp_path):
    """`say` was told only when nothing was written: a user's file came out an image short in silence."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    told = []
    written, skipped = alexft.extract_features(predictor, [photo_paths()["chelsea"], broken], "fc7", tmp_path / "f.npz",
                                               say=told.append)
    assert written == 1 and list(skipped) == [str(broken)]
    assert told == [f"1 of 2 images could not be used; it is not in {tmp_path / 'f.npz'} (e.g. {skipped[str(broken)]})"]
    with pytest.warns(alexft.AlexftWarning, match=r"^1 of 2 images could not be used"):  # the default: a warning
        alexft.extract_features(predictor, [photo_paths()["chelsea"], broken], "fc7", tmp_path / "g.npz")
    with pytest.raises(TypeError, match=r"alexft\.truncated\(model, layer\)"):  # arrays: what gives features
        alexft.extract_features(predictor, [np.zeros((64, 64, 3), np.uint8)], "fc7", tmp_path / "h.npz")


# Serves the image (argv[1]) with each SavedModel named, saving the output where named after it:
# SavedModel output SavedModel output... All in one process, that saved none of them (a loaded
# SavedModel brings no Python callbacks: one served before cannot make the next one work).
SERVE_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
import tensorflow as tf
image = np.load(sys.argv[1])
for folder, output in zip(sys.argv[2::2], sys.argv[3::2], strict=True):
    served = tf.saved_model.load(folder)
    call = served.serve if hasattr(served, "serve") else served.prepare
    np.save(output, np.asarray(call(tf.constant(image[None]))))
"""


def test_preprocess_input_in_a_lambda_layer_or_a_tf_function_saves_and_serves_in_a_fresh_process(tmp_path):
    """Traced there it was a tf.numpy_function: the export succeeded, and serving it from another
    process failed ("Could not find callback with key=pyfunc_4"); it takes TensorFlow's ops,
    within a grey level of OpenCV's; Dataset.map keeps OpenCV's exact path."""
    image = cv2.cvtColor(cv2.imread(str(photo_paths()["chelsea"])), cv2.COLOR_BGR2RGB)
    exact = alexft.preprocess_input(image)
    inputs = keras.Input((None, None, 3), dtype="uint8")
    lambda_model = keras.Model(inputs, keras.layers.Lambda(alexft.preprocess_input)(inputs))
    lambda_model.export(str(tmp_path / "lambda"), verbose=False)

    class Prepare(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def prepare(self, images):
            return alexft.preprocess_input(images)

    tf.saved_model.save(Prepare(), str(tmp_path / "module"))
    np.save(tmp_path / "image.npy", image)
    done = subprocess.run([sys.executable, "-c", SERVE_IN_A_FRESH_PROCESS, str(tmp_path / "image.npy"),
                           *(str(tmp_path / name) for saved in ("lambda", "module") for name in (saved, f"{saved}.npy"))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for saved in ("lambda", "module"):
        served = np.load(tmp_path / f"{saved}.npy")[0]
        assert served.shape == (227, 227, 3) and np.abs(served - exact).max() <= 1.0 + 1e-4
        assert np.mean(served != exact) < 0.5
    in_a_map = next(iter(tf.data.Dataset.from_tensors(image).map(alexft.preprocess_input)))
    np.testing.assert_array_equal(in_a_map.numpy(), exact)


@pytest.mark.parametrize("call, meant", [
    (lambda: alexft.evaluate(None, "data", tencrop=True), "ten_crop"),
    (lambda: alexft.export_model("w.npz", "m.tflite", topk=3), "top_k"),
    (lambda: alexft.extract_features(None, [], "fc7", "f.npz", force=True), "overwrite"),  # the other functions' word
    (lambda: alexft.load_predictor("w.npz", verbose=0), "progress"),  # Keras' word
    (lambda: alexft.predict_files(None, [], tencrop=True), "ten_crop"),  # at the call, not at the first result
    (lambda: alexft.classify(None, [], top_k=3), "top"),
    (lambda: alexft.load_dataset("data", validation_split=0.2), "val_split"),
    (lambda: alexft.merge_features([], "f.npz", overwrit=True), "overwrite"),
    (lambda: alexft.AlexNet(weights=None, num_classes=10), "classes"),  # PyTorch's word
])
def test_a_mistyped_keyword_of_the_public_functions_is_told_the_one_meant(call, meant):
    """finetune named the keyword meant; evaluate(p, D, tencrop=True) and export_model(topk=3)
    gave Python's bare "unexpected keyword argument" (helper-96's trial)."""
    with pytest.raises(TypeError, match=rf"^\w+\(\) got an unexpected keyword argument '\w+'; did you mean '{meant}'\?$"):
        call()


def test_a_keyword_near_none_is_told_the_keywords_there_are_and_the_signatures_stay_the_functions():
    with pytest.raises(TypeError, match=r"^AlexNet\(\) got an unexpected keyword argument 'zzz'; AlexNet\(\) takes "
                                        r"weights, include_top, classes, pooling, classifier_activation, input_tensor, "
                                        r"input_shape, last_layer, name, progress$"):
        alexft.AlexNet(weights=None, zzz=1)
    import inspect

    from alexft import evaluation
    # (help() and a notebook's completion show the function's own parameters and text)
    assert list(inspect.signature(alexft.evaluate).parameters) == ["predictor", "files", "ten_crop", "batch_size",
                                                                   "progress", "report"]
    assert alexft.evaluate.__doc__ == evaluation.evaluate.__wrapped__.__doc__ and alexft.evaluate.__name__ == "evaluate"


def test_predict_takes_an_empty_batch_and_refuses_one_unbatched_image_in_a_line():
    """Keras' predict failed on an empty batch with its own UnboundLocalError ('batch_outputs'),
    where calling the model gave (0, 1000); one image without its batch axis was read as 227
    images of shape (227, 3) (helper-96's trial)."""
    model = alexft.AlexNet(weights=None, classes=7)
    empty = np.zeros((0, 227, 227, 3), "float32")
    assert model.predict(empty, verbose=0).shape == (0, 7) == tuple(model(empty).shape)
    with pytest.raises(ValueError, match=r"^one image of shape \(227, 227, 3\): predict takes a batch of them; give "
                                         r"x\[None\] \(np.expand_dims\(x, 0\)\) for one$"):
        model.predict(np.zeros((227, 227, 3), "float32"), verbose=0)
    assert model.predict(np.zeros((227, 227, 3), "float32")[None], verbose=0).shape == (1, 7)
    any_size = alexft.AlexNet(weights=None, include_top=False, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match=r"^one image of shape \(100, 90, 3\)"):
        any_size.predict(np.zeros((100, 90, 3), "float32"), verbose=0)


def test_export_models_top_k_beyond_the_classes_is_said_as_the_command_says_it(ten_class_weights, tmp_path,
                                                                                monkeypatch):
    """`alexft export -k 20` of a 10-class model notes that each image gets all 10; export_model
    (top_k=20) was silent (helper-94's trial). Said before the export's TensorFlow work."""
    from alexft import export

    path, _ = ten_class_weights
    asked = []
    monkeypatch.setattr(export, "export", lambda weights, output, file_format, top_k, *rest: asked.append(top_k))
    for top_k, output, said in ((20, "m.tflite", ["top_k=20, but the model knows 10 classes: each image gets all 10"]),
                                (10, "m.tflite", []), (5, "saved", [])):
        with warnings.catch_warnings(record=True) as heard:
            warnings.simplefilter("always")
            alexft.export_model(path, tmp_path / output, top_k=top_k)
        assert [str(warning.message) for warning in heard if issubclass(warning.category, alexft.AlexftWarning)] == said
    assert asked == [20, 10, 5]  # (the export clamps it itself)
    params = random_params(seed=5, num_classes=2)  # the default 5 on a model of 2 classes is no request: nothing said
    two = WeightSet({name: tuple(pair) for name, pair in params.items()}, ["cat", "dog"])
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        alexft.export_model(two, tmp_path / "two.tflite")
    assert [warning for warning in heard if issubclass(warning.category, alexft.AlexftWarning)] == []
    assert asked[-1] == 5
