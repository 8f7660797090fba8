"""`alexft export`: the SavedModel and TFLite files, loaded in a fresh process and compared
with the Python path (`alexft classify`, the OpenCV preprocessing)."""
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from alexft.export import decode_and_preprocess, labels_path
from alexft.preprocess import MEAN_BGR, image_views
from alexft.weights import imagenet_class_names
from alexft.cli import main
from fixtures import mount_namespace, photo_paths, stopped_by

# Measured on the photos below: OpenCV's fixed-point bilinear resize and TensorFlow's float
# one, both rounded to whole grey levels, differ by at most one level in about 1 value in 8.
MAX_PIXEL_DIFFERENCE = 1.0
MAX_FRACTION_DIFFERENT = 0.2

# Runs in a new interpreter: nothing of alexft is imported, only TensorFlow and the files.
SERVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    saved_model, tflite, views_file, *images = sys.argv[1:]
    views = np.load(views_file)
    served = tf.saved_model.load(saved_model)
    print("--- serving", file=sys.stderr, flush=True)  # TensorFlow's log lines after this are the calls'
    encoded = served.signatures["serving_default"](images=tf.constant([open(p, "rb").read() for p in images]))
    preprocessed = served.signatures["preprocessed"](views=tf.constant(views))
    interpreter = tf.lite.Interpreter(model_path=tflite)
    signature_list = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner()
    lite = runner(views=views)
    try:  # one undecodable image in a batch: the request fails as a whole (documented)
        served.signatures["serving_default"](images=tf.constant([open(images[0], "rb").read(), b"not an image"]))
        mixed_batch = "succeeded"
    except tf.errors.InvalidArgumentError:
        mixed_batch = "refused"
    out = {f"encoded_{k}": v.numpy() for k, v in encoded.items()}
    out.update({f"preprocessed_{k}": v.numpy() for k, v in preprocessed.items()})
    out.update({f"tflite_{k}": v for k, v in lite.items()})
    out["signatures"] = np.array(sorted(served.signatures))
    out["tflite_signatures"] = np.array(json.dumps(signature_list, sort_keys=True))
    out["mixed_batch"] = np.array(mixed_batch)
    empty = [served.signatures["serving_default"](images=tf.constant([], tf.string)),
             served.signatures["preprocessed"](views=tf.zeros([0, 227, 227, 3]))]
    out["empty_shapes"] = np.array([[list(v.shape) for _, v in sorted(answer.items())] for answer in empty])
    np.savez(sys.argv[3] + ".out.npz", **{k: (v.astype(str) if v.dtype == object else v) for k, v in out.items()})
    """
)


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


@pytest.fixture(scope="module")
def photos():
    return [photo_paths()[name] for name in ("chelsea", "coffee", "astronaut", "camera", "china", "flower")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, canonical_weights_file):
    folder = tmp_path_factory.mktemp("export")
    for file_format, name in (("savedmodel", "alexnet"), ("tflite", "alexnet.tflite")):
        result = run("export", "--weights", canonical_weights_file, "--format", file_format, folder / name)
        assert result.exit_code == 0, result.output
    return folder / "alexnet", folder / "alexnet.tflite"


@pytest.fixture(scope="module")
def served(exported, photos, tmp_path_factory):
    """Every export's outputs on the photos, computed by a fresh Python process."""
    views_file = tmp_path_factory.mktemp("serve") / "views.npy"
    np.save(views_file, np.concatenate([image_views(path) for path in photos]))
    saved_model, tflite = exported
    done = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, saved_model, tflite, views_file, *photos],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"))
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(f"{views_file}.out.npz") as outputs:
        answers = {key: outputs[key] for key in outputs.files}
    answers["log_while_serving"] = done.stderr.split("--- serving\n", 1)[1].splitlines()
    return answers, np.load(views_file)


def test_in_graph_preprocessing_is_within_one_grey_level_of_opencv(photos):
    for path in photos:
        expected = image_views(path)[0]
        in_graph = decode_and_preprocess(tf.constant(path.read_bytes())).numpy()
        difference = np.abs(in_graph - expected)
        assert difference.max() <= MAX_PIXEL_DIFFERENCE + 1e-4, path.name
        assert (difference > 1e-4).mean() < MAX_FRACTION_DIFFERENT, path.name


def _png_declaring(width, height, rows=16):
    """A PNG whose header declares width x height grey pixels, holding `rows` of them (a bomb
    needs no more: the decoder takes the memory for all before it finds out)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * rows)) + chunk(b"IEND", b""))


def _first_gif_frame(data):
    """Where a GIF's first image descriptor (0x2C) is: after the screen, its colour table and the
    extensions (each a chain of sub-blocks), as the GIF89a specification lays them out."""
    position = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[position] == 0x21:
        position += 2
        while data[position]:
            position += data[position] + 1
        position += 1
    assert data[position] == 0x2C
    return position


def test_the_served_model_refuses_an_image_declaring_too_many_pixels_before_decoding(photos):
    """The exported model decoded whatever it was sent: a 12 KB PNG declaring 20000x20000
    pixels took a server 8 GB and 15 s (a real 389 KB one, in a helper's trial). Each format's declared size is read as Pillow reads it
    (the reference here), and one over MAX_PIXELS fails the request, as classify refuses it."""
    from PIL import Image

    from alexft.declared_pixels import declared_pixels
    from alexft.image_files import MAX_PIXELS

    image = Image.open(photos[0]).convert("RGB").resize((53, 37))
    encoded = {}
    for name, kind, options in [("png", "PNG", {}), ("jpeg", "JPEG", {}), ("bmp", "BMP", {}), ("gif", "GIF", {}),
                                ("webp VP8", "WEBP", {"quality": 80}), ("webp VP8L", "WEBP", {"lossless": True}),
                                ("webp VP8X", "WEBP", {"lossless": True, "icc_profile": b"x" * 10})]:
        buffer = io.BytesIO()
        image.save(buffer, kind, **options)
        encoded[name] = buffer.getvalue()
    top_down = bytearray(encoded["bmp"])
    top_down[22:26] = struct.pack("<i", -37)  # rows stored top-down: a negative height
    encoded["bmp top-down"] = bytes(top_down)
    for name, data in encoded.items():
        assert Image.open(io.BytesIO(data)).size == (53, 37), name
        assert declared_pixels(tf.constant(data)).numpy() == 53 * 37, name
    # GIF: what TensorFlow's decoder allocates, every frame at the largest frame's extent
    frames = [image, image.rotate(90), image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    animated = Image.open(io.BytesIO(buffer.getvalue()))
    assert animated.n_frames == 3
    assert declared_pixels(tf.constant(buffer.getvalue())).numpy() == 3 * 53 * 37 == tf.io.decode_gif(buffer.getvalue()).numpy().size // 3
    gif_bomb = bytearray(encoded["gif"])  # a 1x1 screen, its one frame declaring 20000x20000
    gif_bomb[6:10] = struct.pack("<HH", 1, 1)
    frame = _first_gif_frame(gif_bomb)
    gif_bomb[frame + 5:frame + 9] = struct.pack("<HH", 20000, 20000)
    jpeg_bomb = bytearray(encoded["jpeg"])  # the frame header (SOF0) declaring 60000x60000
    frame = jpeg_bomb.index(b"\xff\xc0")
    jpeg_bomb[frame + 5:frame + 9] = struct.pack(">HH", 60000, 60000)
    serve = tf.function(lambda images: tf.map_fn(decode_and_preprocess, images,
                                                 fn_output_signature=tf.TensorSpec([227, 227, 3], tf.float32)))
    assert serve(tf.constant([encoded["png"], _png_declaring(300, 200, rows=200)])).shape == (2, 227, 227, 3)
    for bomb in (_png_declaring(20000, 20000), bytes(jpeg_bomb), bytes(gif_bomb)):
        assert declared_pixels(tf.constant(bomb)).numpy() > MAX_PIXELS
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"an image declares more than {MAX_PIXELS:,} pixels in "
                                                                 "its header: refused before decoding"):
            serve(tf.constant([encoded["png"], bomb]))


def test_in_graph_preprocessing_drops_alpha_and_broadcasts_grey_as_the_python_path_does(photos):
    """RGBA and grey-and-alpha images give the views of their colour alone; a count of channels
    it cannot read is one ValueError, not TensorFlow's "Incompatible shapes"."""
    from alexft.preprocessing_layer import CaffePreprocessing

    layer = CaffePreprocessing()
    rgb = cv2.cvtColor(cv2.imread(str(photos[0])), cv2.COLOR_BGR2RGB)
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    grey = rgb[..., :1]
    for image, same_as in ((np.concatenate([rgb, alpha], axis=-1), rgb), (np.concatenate([grey, alpha], axis=-1), grey)):
        got = layer(image[np.newaxis]).numpy()
        assert got.shape == (1, 227, 227, 3)
        np.testing.assert_array_equal(got, layer(same_as[np.newaxis]).numpy())
    np.testing.assert_allclose(layer(grey[np.newaxis]).numpy()[..., 0] + MEAN_BGR[0],
                               layer(grey[np.newaxis]).numpy()[..., 2] + MEAN_BGR[2], atol=1e-4)  # grey on B, G, R
    with pytest.raises(ValueError, match=r"CaffePreprocessing takes RGB images, .* got shape \(1, 64, 64, 5\)"):
        layer(np.zeros((1, 64, 64, 5), np.uint8))
    # In a graph that takes any number of channels (a model served for any image), alike.
    served = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, None), tf.uint8)])
    for image, same_as in ((np.concatenate([rgb, alpha], axis=-1), rgb), (np.concatenate([grey, alpha], axis=-1), grey),
                           (grey, grey), (rgb, rgb)):
        np.testing.assert_array_equal(served(image[np.newaxis]).numpy(), layer(same_as[np.newaxis]).numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="CaffePreprocessing takes RGB images"):
        served(np.zeros((1, 64, 64, 5), np.uint8))


def test_saved_model_on_preprocessed_views_matches_the_python_path(served, predictor, photos):
    outputs, views = served
    assert list(outputs["signatures"]) == ["preprocessed", "serving_default"]
    expected = predictor.probabilities(views)
    # The export splits grouped layers (runs on any kernels); the Predictor may not: float32 order differs.
    np.testing.assert_allclose(outputs["preprocessed_probabilities"], expected, rtol=1e-4, atol=1e-7)
    names = imagenet_class_names()
    for row, probabilities in enumerate(expected):
        top = np.argsort(-probabilities, kind="stable")[:5]
        assert list(outputs["preprocessed_classes"][row]) == [names[index] for index in top]
        np.testing.assert_allclose(outputs["preprocessed_scores"][row], probabilities[top], rtol=1e-4)


def test_serving_logs_no_error_lines(served):
    """A server's log gets no error-level line from TensorFlow's graph optimiser when the model
    is called (declared_pixels' reversed constant had made its layout pass fail, once per
    process, on every server)."""
    errors = [line for line in served[0]["log_while_serving"] if re.match(r"[EF]\d{4} ", line)]
    assert not errors, errors


def test_the_tflite_file_holds_what_the_docs_say(served):
    """docs/commands.md: one signature, `serving_default`, taking `views` and returning
    `probabilities`, `indices` and `scores`."""
    outputs, _ = served
    signatures = json.loads(str(outputs["tflite_signatures"]))
    assert sorted(signatures) == ["serving_default"]
    assert signatures["serving_default"]["inputs"] == ["views"]
    assert sorted(signatures["serving_default"]["outputs"]) == ["indices", "probabilities", "scores"]


def test_a_batch_with_an_undecodable_image_is_refused_as_a_whole_as_documented(served):
    outputs, _ = served
    assert str(outputs["mixed_batch"]) == "refused"


def test_an_empty_batch_gets_empty_outputs_from_both_signatures(served):
    """A request whose images a server had all filtered out failed in the convolutions
    ("Number of ways to split should evenly divide the split dimension")."""
    outputs, _ = served
    # classes, probabilities, scores (sorted by name): top-5 of the 1,000 classes
    assert outputs["empty_shapes"].tolist() == [[[0, 5], [0, 1000], [0, 5]]] * 2


def test_saved_model_on_image_bytes_comes_close_to_the_python_path(served, predictor):
    outputs, views = served
    expected = predictor.probabilities(views)
    in_graph = outputs["encoded_probabilities"]
    assert in_graph.shape == expected.shape
    # One grey level on some pixels moves the probabilities a little, never the ranking of clear winners.
    np.testing.assert_allclose(in_graph, expected, atol=2e-3)
    clear = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2] > 5e-3
    assert clear.any()
    np.testing.assert_array_equal(in_graph.argmax(1)[clear], expected.argmax(1)[clear])


def test_tflite_matches_alexft_classify(served, exported, canonical_weights_file, photos):
    outputs, _ = served
    result = run("classify", "--json", "--weights", canonical_weights_file, *photos)
    assert result.exit_code == 0, result.output
    classified = [json.loads(line) for line in result.stdout.splitlines()]
    labels = labels_path(exported[1]).read_text(encoding="utf-8").splitlines()
    assert labels == imagenet_class_names()
    for row, record in enumerate(classified):
        top = record["predictions"]
        assert [labels[index] for index in outputs["tflite_indices"][row]] == [entry["label"] for entry in top]
        np.testing.assert_allclose(outputs["tflite_scores"][row], [entry["probability"] for entry in top], rtol=1e-4, atol=1e-7)
    assert outputs["tflite_probabilities"].shape == (len(photos), 1000)


def test_export_refuses_to_overwrite_without_force(exported, canonical_weights_file):
    saved_model, _ = exported
    result = run("export", "--weights", canonical_weights_file, saved_model)
    assert result.exit_code == 1 and "already exists; pass --force" in result.stderr
    assert (saved_model / "saved_model.pb").is_file()


def test_the_python_export_takes_the_format_from_the_name_as_the_command_does(canonical_weights_file, tmp_path):
    """A user's alexft.export_model(W, "m.tflite") wrote a SavedModel folder under that name.
    The name now asks for TF Lite, as `alexft export` reads it: here refused, for bfloat16
    (SavedModel only), before any work; a plain name stays a SavedModel."""
    from alexft.export import ExportError, ExportOptionsError, export

    with pytest.raises(ExportOptionsError, match="TF Lite has no bfloat16 kernels"):
        export(canonical_weights_file, tmp_path / "m.TFLite", precision="bfloat16")
    with pytest.raises(ExportOptionsError, match=r'already sets the file\'s numbers: drop precision="bfloat16"$'):
        export(canonical_weights_file, tmp_path / "m.tflite", precision="bfloat16", quantization="float16")
    # Told in export's keywords, not the command line's flags (which said "--format tflite").
    with pytest.raises(ExportOptionsError, match=r'^quantization needs the TF Lite format \(file_format="tflite", or '
                                                 r'an output ending in \.tflite\)$'):
        export(canonical_weights_file, tmp_path / "m", quantization="float16")
    # --quantize's words work from Python too (a string gave "'str' object has no attribute 'configure'").
    from alexft.quantize import QuantizationError

    with pytest.raises(QuantizationError, match="int8"):
        export(canonical_weights_file, tmp_path / "m.tflite", quantization="int8")  # no calibration images
    with pytest.raises(QuantizationError, match="calibration images are for int8 quantization only"):
        export(canonical_weights_file, tmp_path / "m.tflite", calibration=tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "m.tflite").write_bytes(b"\x1c\0\0\0TFL3" + bytes(24))
    with pytest.raises(ExportError, match=r"m\.tflite: already exists; pass force=True to replace it$"):
        export(canonical_weights_file, tmp_path / "m.tflite")


def test_force_may_replace_what_an_export_writes_and_nothing_else(exported, tmp_path):
    """--force deletes OUTPUT first: only an earlier export (or an empty folder) may go. The
    refusals on the command line are in test_cli_contract.py."""
    from alexft.export_request import is_an_export

    saved_model, tflite = exported
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.tflite").write_text("not a flatbuffer")
    (tmp_path / "serving" / "1").mkdir(parents=True)
    assert is_an_export(saved_model) and is_an_export(tflite) and is_an_export(tmp_path / "empty")
    assert not is_an_export(tmp_path / "notes.tflite") and not is_an_export(tmp_path / "serving")


def test_labels_beside_a_tflite_file_are_replaced_only_with_it(tmp_path):
    from alexft.export_request import ExportError, ExportRequest

    notes = tmp_path / "y.labels.txt"
    notes.write_text("my own notes")
    for force in (False, True):  # no y.tflite: these labels are not an export's
        with pytest.raises(ExportError, match="y.labels.txt: already exists, where the labels of y.tflite go; remove it"):
            ExportRequest(tmp_path / "y.tflite", "tflite", force=force).check()
    ExportRequest(tmp_path / "y", "savedmodel").check()  # a SavedModel holds its labels: no file beside it
    earlier = tmp_path / "x.tflite"
    earlier.write_bytes(b"\x1c\0\0\0TFL3" + bytes(24))
    (tmp_path / "x.labels.txt").write_text("tench\n")
    with pytest.raises(ExportError, match="x.tflite: already exists; pass --force to replace it"):
        ExportRequest(earlier, "tflite").check()
    ExportRequest(earlier, "tflite", force=True).check()
    assert notes.read_text() == "my own notes"


def test_a_savedmodel_replacing_a_tflite_export_takes_its_labels_file_away_too(canonical_weights_file, tmp_path,
                                                                               monkeypatch):
    """`export out --format tflite`, then `export out --force` (a SavedModel, which holds its own
    labels): out.labels.txt was left behind, describing a model no longer there."""
    import alexft.export

    def written(module, folder):
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"new")
        return folder

    monkeypatch.setattr(alexft.export, "_write_saved_model", written)
    output = tmp_path / "noext"
    output.write_bytes(b"\x1c\0\0\0TFL3" + bytes(24))
    (tmp_path / "noext.labels.txt").write_text("tench\n")
    (tmp_path / "other.labels.txt").write_text("someone else's\n")
    alexft.export.export(canonical_weights_file, output, file_format="savedmodel", force=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["noext", "other.labels.txt"]
    assert (output / "saved_model.pb").read_bytes() == b"new"


def test_a_keras_file_export_is_the_keras_model_with_the_same_scores(canonical_weights_file, predictor, photos,
                                                                      tmp_path):
    """export_model(W, "m.keras") wrote a SavedModel folder named m.keras, which Keras cannot
    load. The name (or --format keras) now asks for alexft.AlexNet's Keras model: one file that
    keras.saving.load_model reads, with the class names, scoring as classify does. It replaces
    an earlier export (a TF Lite file's labels go with it), never a user's file."""
    import keras

    from alexft.export import ExportError, ExportOptionsError, export
    from alexft.export_request import format_for, is_an_export

    assert format_for("m.KERAS") == "keras" and format_for("m.keras.d") == "savedmodel" and format_for(".keras") == "keras"
    with pytest.raises(ExportOptionsError, match="a Keras file holds float32 weights; for bfloat16 .* alexft.AlexNet"):
        export(canonical_weights_file, tmp_path / "m.keras", precision="bfloat16")
    # Keras saves and loads only names ending in .keras: M.KERAS crashed in Keras' save, and
    # `--format keras` to d2/ wrote a file Keras could not load. A top-k has no effect there.
    for name, options, right in (("M.KERAS", [], "M.keras"), ("d2/", ["--format", "keras"], "d2.keras"),
                                 ("m.keras.bak", ["--format", "keras"], "m.keras")):  # (it suggested m.keras.keras)
        result = run("export", "--weights", canonical_weights_file, *options, tmp_path / name)
        assert result.exit_code == 2 and f"a Keras file's name ends in .keras (lower case: Keras saves and loads no other), " \
            f"e.g. {right}" in result.stderr, result.output
    for name in ("m.lite", "m.TFL"):  # TF Lite's other endings: it said export does not write TF Lite
        result = run("export", "--weights", canonical_weights_file, "--format", "tflite", tmp_path / name)
        stem = Path(name).stem
        assert result.exit_code == 2 and f"{name}: a TF Lite file's name ends in .tflite here; name it {stem}.tflite" \
            in result.stderr, result.output
    result = run("export", "--weights", canonical_weights_file, "-k", "3", tmp_path / "m.keras")
    assert result.exit_code == 2 and "--top-k is for the SavedModel and TF Lite signatures" in result.stderr
    # A format given against the name's: a TF Lite file named .keras, a SavedModel folder named
    # .keras (Keras' load_model: "File not found") or .tflite. They were written as asked.
    for name, file_format, named, asked, right in (("x.keras", "tflite", "Keras file", "TF Lite file", "x.tflite"),
                                                   ("y.keras", "savedmodel", "Keras file", "SavedModel folder", "y"),
                                                   ("z.TFLITE", "savedmodel", "TF Lite file", "SavedModel folder", "z"),
                                                   # (this was told a Keras file's name is lower case)
                                                   ("t.tflite", "keras", "TF Lite file", "Keras file", "t.keras")):
        result = run("export", "--weights", canonical_weights_file, "--format", file_format, tmp_path / name)
        assert result.exit_code == 2 and f"{name}: the name is a {named}'s, the format asked for a {asked}; name it for " \
            f"its format (e.g. {right}), or leave the format to the name" in result.stderr, result.output
    with pytest.raises(ValueError, match="^top_k must be a whole number of at least 1; got 0$"):
        export(canonical_weights_file, tmp_path / "sm", top_k=0)  # (a SavedModel returning no class)
    # Names of formats export does not write: `export model.h5` wrote a SavedModel folder named
    # model.h5, and `--format tflite model.h5` a TF Lite file, without a word.
    for name, options, meant in (("model.h5", [], "Keras' legacy HDF5 format"), ("model.H5", ["--format", "tflite"],
                                 "Keras' legacy HDF5 format"), ("net.onnx", [], "ONNX"), ("g.pb", [], "a frozen TensorFlow graph"),
                                 # a folder named like alexft's own weights file: --weights then met a folder
                                 ("m.npz", [], "a weights file (what --weights reads)"), ("m.tar.gz", [], "an archive")):
        result = run("export", "--weights", canonical_weights_file, *options, tmp_path / name)
        stem = name.split(".")[0]
        assert result.exit_code == 2 and f"{name}: the name asks for {meant}, which export does not write; name it " \
            f"{stem} (a SavedModel folder), {stem}.keras or {stem}.tflite" in result.stderr, result.output
    # A slip in the ending (`export m.tflte` had written a SavedModel folder named m.tflte, exit 0).
    for name, meant, kind in (("m.tflte", "m.tflite", "TF Lite file"), ("m.TFLIT", "m.tflite", "TF Lite file"),
                              ("m.kears", "m.keras", "Keras file")):
        result = run("export", "--weights", canonical_weights_file, tmp_path / name)
        assert result.exit_code == 2 and f"{name}: did you mean {meant}? A name ending in {meant[1:]} makes a {kind}; a " \
            "SavedModel folder's name needs no ending" in result.stderr, result.output
    # A trailing dot or space (`export m.keras.` had written a SavedModel folder named m.keras.).
    for name, tail, meant in (("m.keras.", ".", "m.keras"), ("m.tflite ", " ", "m.tflite"), ("sm..", "..", "sm")):
        result = run("export", "--weights", canonical_weights_file, tmp_path / name)
        assert result.exit_code == 2 and f"'{tmp_path / name}': the name ends in '{tail}', which most tools drop or " \
            f"mistake; did you mean '{tmp_path / meant}'?" in result.stderr, result.output
    assert list(tmp_path.iterdir()) == []
    output = tmp_path / "out" / "m.keras"
    result = run("export", "--weights", canonical_weights_file, output)
    assert result.exit_code == 0 and result.output == f"{output}: keras, 233 MiB\n", result.output
    assert output.is_file() and is_an_export(output) and sorted(tmp_path.joinpath("out").iterdir()) == [output]
    model = keras.saving.load_model(output)
    assert model.class_names == imagenet_class_names()
    # Its weights come back with its class names (they were dropped); the file itself, given
    # where weights go, is named for what it is (it was "corrupt or truncated .npz").
    import alexft

    assert alexft.weights_from_model(model).class_names == imagenet_class_names()
    with pytest.raises(alexft.WeightsError, match=r"m.keras: a Keras model file, not weights; load it with "
                                                  r"keras.saving.load_model .* alexft.weights_from_model\(model\)$"):
        alexft.load_weights(output)
    views = np.concatenate([image_views(path) for path in photos])
    np.testing.assert_allclose(model.predict(views, verbose=0), predictor.probabilities(views), rtol=1e-4, atol=1e-7)
    # An earlier TF Lite file under the name is replaced with --force, and its labels go with it.
    tflite = tmp_path / "x.keras"  # (`export x.keras --format tflite` writes one)
    tflite.write_bytes(b"\x1c\0\0\0TFL3" + bytes(24))
    labels_path(tflite).write_text("tench\n")
    result = run("export", "--weights", canonical_weights_file, "--force", tflite)
    assert result.exit_code == 0, result.output
    assert is_an_export(tflite) and not labels_path(tflite).exists()
    notes = tmp_path / "notes.keras"
    notes.write_text("my own notes")
    with pytest.raises(ExportError, match="notes.keras: exists and is not an earlier export"):
        export(canonical_weights_file, notes, force=True)
    assert notes.read_text() == "my own notes"


def test_an_earlier_savedmodel_folder_is_replaced_with_force_only(tmp_path):
    """A folder output is refused as unwritable everywhere else; an earlier SavedModel is not
    (the refusal landed in 1a97c37 and made `export DIR --force` fail on every SavedModel)."""
    from alexft.export_request import ExportError, ExportRequest

    earlier = tmp_path / "served"
    earlier.mkdir()
    (earlier / "saved_model.pb").write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match="served: already exists; pass --force to replace it"):
        ExportRequest(earlier, "savedmodel").check()
    assert ExportRequest(earlier, "savedmodel", force=True).check().output == earlier
    # An empty folder made for it (mkdir -p serving/photos/1) is taken without --force; for a
    # file format, or when it holds anything, it is not.
    empty = tmp_path / "serving" / "1"
    empty.mkdir(parents=True)
    assert ExportRequest(empty, "savedmodel").check().output == empty
    (tmp_path / "m.tflite").mkdir()
    for folder, file_format, suffix in ((tmp_path / "m.tflite", "tflite", "tflite"), (empty, "tflite", "tflite"),
                                        (empty, "keras", "keras"), (earlier, "tflite", "tflite")):
        for force in (False, True):  # a folder is never replaced by a file of its name
            with pytest.raises(ExportError, match=f"{folder.name}/: is a folder; the export is one .*: name it "
                                                  rf"\(e.g. .*{folder.name}/alexnet.{suffix}\)$"):
                ExportRequest(folder, file_format, force=force).check()
    for file_format in ("tflite", "keras"):  # typed as a folder, not made yet (it wrote a file named `later`)
        with pytest.raises(ExportError, match=rf"later/: names a folder; .*\(e.g. .*later/alexnet.{file_format}\)$"):
            ExportRequest(f"{tmp_path / 'later'}/", file_format).check()
    assert not (tmp_path / "later").exists()
    assert (earlier / "saved_model.pb").exists()
    (empty / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not an earlier export"):
        ExportRequest(empty, "savedmodel").check()


def test_a_killed_export_leaves_temporaries_that_the_next_one_removes(tmp_path):
    from alexft.atomic import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.tflite.convert.tmp-{dead.stdout.strip()}"
    (stale / "variables").mkdir(parents=True)
    (stale / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(1000))
    running = tmp_path / f".x.tflite.tmp-{os.getpid()}"  # another export, still writing
    running.write_bytes(b"half")
    others = [tmp_path / ".x.tflite.tmp-draft", tmp_path / f".y.tflite.tmp-{dead.stdout.strip()}"]  # not ours / not x's
    for other in others:
        other.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path, shared=True, prefix="x.tflite") == [stale.name]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([running.name] + [other.name for other in others])


def test_sigterm_stops_a_tflite_export_and_leaves_nothing(canonical_weights_file, tmp_path):
    """The converter's ~470 MB temporary SavedModel goes beside the output, and SIGTERM runs
    the cleanup (its default action would kill the process with the files left), down to the
    folders made for the output."""
    folder = tmp_path / "out" / "models"
    process = subprocess.Popen([sys.executable, "-m", "alexft", "export", str(folder / "x.tflite"), "--format", "tflite",
                                "--weights", str(canonical_weights_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 300
    while not list(folder.glob(".x.tflite.convert.tmp-*/*")):  # the converter has started writing
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == stopped_by(signal.SIGTERM), stderr
    assert stderr.splitlines()[-1] == "alexft: terminated"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new output", "replacing with --force"])
def test_a_sigterm_swallowed_inside_tensorflow_still_stops_the_export_before_it_writes(
        existing, canonical_weights_file, tmp_path, monkeypatch):
    """Under load in CI a SIGTERM sent during the conversion once ended in exit 0 and a finished
    export: its Terminated had landed where TensorFlow only prints exceptions (stderr held back).
    Simulated here: the signal is recorded, its exception never arrives."""
    import alexft.export
    from alexft import interrupts

    output = tmp_path / "out" / "models" / "served"
    if existing:
        output.mkdir(parents=True)
        (output / "saved_model.pb").write_bytes(b"an earlier export")

    def write_while_a_sigterm_is_swallowed(module, folder):
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"new")
        interrupts.note(signal.SIGTERM)

    monkeypatch.setattr(alexft.export, "_write_saved_model", write_while_a_sigterm_is_swallowed)
    args = ["export", str(output), "--weights", str(canonical_weights_file)] + (["--force"] if existing else [])
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 143 and result.stderr.splitlines()[-1] == "alexft: terminated", result.output
    assert result.stdout == ""
    if existing:  # left as it was
        assert [path.name for path in output.iterdir()] == ["saved_model.pb"]
        assert (output / "saved_model.pb").read_bytes() == b"an earlier export"
        assert sorted(path.name for path in output.parent.iterdir()) == ["served"]
    else:  # nothing, down to the folders made for it
        assert list(tmp_path.iterdir()) == []


def _calibration_folder(folder, photos, per_photo=5, seed=0):
    """Random crops of the photos, as a user's own images would be; and one broken file."""
    import cv2

    rng = np.random.default_rng(seed)
    folder.mkdir()
    for index, path in enumerate(photos):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        height, width = image.shape[:2]
        for crop in range(per_photo):
            h, w = int(height * rng.uniform(0.5, 0.9)), int(width * rng.uniform(0.5, 0.9))
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            cv2.imwrite(str(folder / f"{index}_{crop}.jpg"), image[top:top + h, left:left + w])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def test_quantized_tflite_files_are_smaller_and_agree_with_float32(exported, served, canonical_weights_file, photos,
                                                                   tmp_path, caplog, capfd, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    from alexft import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.05)  # progress lines within the second calibration takes

    outputs, views = served
    float32 = outputs["tflite_probabilities"]
    calibration = _calibration_folder(tmp_path / "calibration", photos)
    # float16 from the same weights under other class names, some not ASCII (a model fine-tuned
    # on folders named in any language), into a folder that does not exist yet.
    from alexft import weights as weights_io

    renamed = weights_io.load(canonical_weights_file)
    names = [f"{name} · n°{index} é" if index % 7 == 0 else name for index, name in enumerate(imagenet_class_names())]
    renamed = weights_io.save(weights_io.WeightSet(renamed.params, names), tmp_path / "renamed.npz")
    for mode in ("float16", "int8"):
        path = tmp_path / "new" / f"{mode}.tflite" if mode == "float16" else tmp_path / f"{mode}.tflite"
        extra = ["--calibration", calibration] if mode == "int8" else []
        source = renamed if mode == "float16" else canonical_weights_file
        capfd.readouterr()
        result = run("export", "--weights", source, "--format", "tflite", "--quantize", mode, *extra, path)
        # int8: written, calibrated on the 30 good images; the broken one is named, and the exit
        # status says that some input could not be used, as classify's does.
        assert result.exit_code == (1 if mode == "int8" else 0), result.output
        if mode == "int8":
            assert result.stderr.splitlines()[-1] == "alexft: 1 of 31 calibration images could not be used"
            # 20 s or so of calibration showed nothing: its progress reaches stderr, which the
            # converter's own chatter (on descriptor 2, held back) does not
            shown = result.stderr.splitlines()
            assert "alexft: int8 calibration: 30/30 (100%)" in [line.split(" [")[0] for line in shown], shown
        assert f"tflite, {mode}" in result.stdout and labels_path(path).is_file()
        expected_names = names if mode == "float16" else imagenet_class_names()
        assert labels_path(path).read_text(encoding="utf-8").splitlines() == expected_names
        interpreter = Interpreter(model_path=str(path))
        got = np.array(interpreter.get_signature_runner()(views=views)["probabilities"])
        size = path.stat().st_size / exported[1].stat().st_size
        tensor_types = {detail["dtype"] for detail in interpreter.get_tensor_details()}
        if mode == "float16":
            assert 0.45 < size < 0.55 and np.float16 in tensor_types
            assert np.abs(got - float32).max() < 2e-3 and (got.argmax(1) == float32.argmax(1)).all()
        else:
            assert size < 0.3 and np.int8 in tensor_types
            assert ("measuring the activations' ranges on 30 calibration images; so few give rough ranges"
                    in caplog.text)
            assert "calibration: skipped" in caplog.text and "broken.jpg" in caplog.text
            # The int8 softmax's output is in steps of 1/256, so small probabilities read 0; what
            # a user needs is the same ranking (benchmarks/quantized.py measures it on 200 images).
            assert np.allclose(got * 256, np.round(got * 256), atol=1e-3)
            assert (got.argmax(1) == float32.argmax(1)).sum() >= len(views) - 1
            overlap = [len(set(a) & set(b)) for a, b in zip(np.argsort(-got, 1)[:, :5], np.argsort(-float32, 1)[:, :5])]
            assert np.mean(overlap) >= 3


SMALL_DISK = mount_namespace()


@pytest.mark.skipif(not SMALL_DISK, reason="needs unshare to mount a small tmpfs (root or user namespaces)")
def test_a_disk_too_small_for_the_export_is_said_in_one_line_and_nothing_is_left(canonical_weights_file, photos,
                                                                                 tmp_path):
    """On a 300 MiB disk (AlexNet's parameters are 233 MiB): the TF Lite converter's scratch does
    not fit, nor, once the disk is nearly full, a SavedModel's variables. Each export fails with one
    line naming the output and the cause (the converter had failed with a traceback ending in
    "'NoneType' object is not callable", a SavedModel with TensorFlow's ResourceExhaustedError
    naming a temporary file); classify still answers and exits 0 when its LiteRT copy cannot be built."""
    disk, image = tmp_path / "disk", tmp_path / "photo.png"
    disk.mkdir()
    shutil.copy(photos[0], image)
    alexft = f"'{sys.executable}' -m alexft"
    script = "\n".join([
        f"mount -t tmpfs -o size=300m tmpfs '{disk}' || exit 99", f"cd '{disk}'",
        f"{alexft} export --weights '{canonical_weights_file}' m.tflite 2> tflite.err; echo $? > tflite.rc",
        f"ALEXFT_CACHE='{disk}/cache' {alexft} classify --runtime auto --top-k 1 --weights '{canonical_weights_file}' "
        f"'{image}' > classify.out 2> classify.err; echo $? > classify.rc",
        "head -c 150m /dev/zero > fill",
        f"{alexft} export --weights '{canonical_weights_file}' sm 2> sm.err; echo $? > sm.rc",
        f"{alexft} export --weights '{canonical_weights_file}' m.keras 2> keras.err; echo $? > keras.rc",
        "rm fill", f"cp -r . '{tmp_path}/seen'",  # the tmpfs goes with the namespace
    ])
    done = subprocess.run([*SMALL_DISK, "sh", "-c", script], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr
    seen = tmp_path / "seen"

    def said(name):
        return (seen / f"{name}.rc").read_text().strip(), (seen / f"{name}.err").read_text()

    rc, err = said("tflite")
    assert rc == "1" and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("Error: m.tflite: cannot be written: the TF Lite converter needs about 4"), err
    assert "converting" not in err  # the "tens of seconds" were announced, then refused
    assert re.search(r"needs about \d+ MiB free in \S+ for its temporary files, and (29\d|300) MiB are free$", err), err
    rc, err = said("classify")
    assert rc == "0" and "Traceback" not in err, err
    assert len((seen / "classify.out").read_text().splitlines()) == 2  # the name and its top class
    assert "no LiteRT copy was built, short calls stay on TensorFlow" in err and "the TF Lite converter needs" in err, err
    rc, err = said("sm")
    assert rc == "1" and "Traceback" not in err, err
    assert err.splitlines() == ["alexft: sm: writing a SavedModel folder",
                                "Error: sm: could not be written (no space left on the device)"], err
    rc, err = said("keras")  # (Keras' own OSError had said "No space left on device", another wording)
    assert rc == "1" and err.splitlines() == ["Error: m.keras: could not be written (no space left on the device)"], err
    left = sorted(path.name for path in seen.iterdir())
    assert left == sorted(["cache", *(f"{name}.{kind}" for name in ("tflite", "classify", "sm", "keras")
                                      for kind in ("rc", "err")), "classify.out"]), left
    assert [path.name for path in (seen / "cache" / "litert").iterdir() if not path.name.endswith(".lock")] == []
