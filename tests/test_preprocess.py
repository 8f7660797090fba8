"""The pinned preprocessing and the image reader's handling of bad files."""
import io
import concurrent.futures
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from alexft import image_files, image_sources, preprocess
from alexft.errors import AlexftWarning, ImageError
from fixtures import photo_paths

CAFFE_MEAN_BGR = [104.00698793, 116.66876762, 122.67891434]
# caffe.io.oversample on a 256x256 image, 227 crops, from the docs' table: (rows, cols).
CAFFE_CROPS = [((0, 227), (0, 227)), ((0, 227), (29, 256)), ((29, 256), (0, 227)),
               ((29, 256), (29, 256)), ((14, 241), (14, 241))]


def encode(image, suffix, **params):
    ok, data = cv2.imencode(suffix, image, [int(k) for pair in params.items() for k in pair])
    assert ok
    return data.tobytes()


def random_image(height=300, width=400, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def test_resize_then_subtract_caffe_mean():
    image = random_image()
    original = image.copy()
    prepared = preprocess.resize_and_subtract_mean(image)
    expected = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected -= np.array(CAFFE_MEAN_BGR, np.float32)
    assert prepared.shape == (256, 256, 3) and prepared.dtype == np.float32
    np.testing.assert_array_equal(prepared, expected)
    np.testing.assert_array_equal(image, original)  # the input is not modified


def test_ten_crops_follow_caffe_oversample_order():
    prepared = np.random.default_rng(1).standard_normal((256, 256, 3)).astype(np.float32)
    crops = preprocess.ten_crops(prepared)
    assert crops.shape == (10, 227, 227, 3)
    for index, ((top, bottom), (left, right)) in enumerate(CAFFE_CROPS):
        np.testing.assert_array_equal(crops[index], prepared[top:bottom, left:right])
        np.testing.assert_array_equal(crops[index + 5], prepared[top:bottom, left:right][:, ::-1])
    np.testing.assert_array_equal(preprocess.center_crop(prepared), prepared[14:241, 14:241])


def test_image_views_of_a_photo(tmp_path):
    path = photo_paths()["china"]
    views = preprocess.image_views(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    expected = cv2.resize(image, (256, 256)).astype(np.float32) - np.array(CAFFE_MEAN_BGR, np.float32)
    np.testing.assert_array_equal(views[0], expected[14:241, 14:241])
    assert preprocess.image_views(path, ten_crop=True).shape == (10, 227, 227, 3)


def test_grey_alpha_and_16_bit_images_become_8_bit_bgr(tmp_path):
    grey = random_image(channels=1)[..., 0]
    (tmp_path / "grey.png").write_bytes(encode(grey, ".png"))
    decoded = preprocess.read_image(tmp_path / "grey.png")
    assert decoded.shape == (300, 400, 3)
    np.testing.assert_array_equal(decoded[..., 0], grey)
    np.testing.assert_array_equal(decoded[..., 2], grey)

    bgra = random_image(channels=4)
    (tmp_path / "alpha.png").write_bytes(encode(bgra, ".png"))
    np.testing.assert_array_equal(preprocess.read_image(tmp_path / "alpha.png"), bgra[..., :3])

    deep = (random_image().astype(np.uint16) * 257)
    (tmp_path / "deep.png").write_bytes(encode(deep, ".png"))
    decoded = preprocess.read_image(tmp_path / "deep.png")
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, random_image())


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))  # 20 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert preprocess.read_image(tmp_path / "rotated.jpg").shape == (20, 10, 3)


def test_non_ascii_path(tmp_path):
    path = tmp_path / "café 猫.jpg"
    path.write_bytes(encode(random_image(), ".jpg"))
    assert preprocess.read_image(path).shape == (300, 400, 3)


def jpeg_with_thumbnail_segment(main_jpeg, thumbnail_jpeg):
    """Put a complete JPEG (with its own end marker) into an APP1 segment, as EXIF does."""
    payload = b"Exif\x00\x00" + thumbnail_jpeg
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return main_jpeg[:2] + segment + main_jpeg[2:]


def bad_images():
    jpeg = encode(random_image(), ".jpg")
    png = encode(random_image(), ".png")
    tiff = encode(random_image(), ".tiff")
    thumbnailed = jpeg_with_thumbnail_segment(jpeg, encode(random_image(32, 32), ".jpg"))
    tga, ico = (pillow_encoded(random_image(), kind) for kind in ("TGA", "ICO"))
    return {
        "empty.jpg": (b"", "empty file"),
        "notes.jpg": (b"just some text, not a picture\n" * 20, "not an image"),
        "page.png": (b"<!DOCTYPE html><html><body>404</body></html>", "not an image \\(an HTML page\\)"),
        "cut.png": (png[: len(png) // 2], "truncated PNG \\(no end chunk; libpng error: PNG input buffer is incomplete\\)$"),
        # Cut in its first chunks, it had been "corrupt image header (Truncated File Read)".
        "cut-early.png": (png[:20], "truncated PNG \\(no end chunk\\)$"),
        "cut-at-data.png": (png[:100], "truncated PNG \\(no end chunk\\)$"),
        # A format Pillow knows and OpenCV does not read: said so, not "corrupt or truncated".
        "photo.tga": (tga, "a TGA image, a format alexft does not read; convert it to JPEG or PNG$"),
        "icon.ico": (ico, "an ICO image, a format alexft does not read"),
        # Phones' photos (HEIC, AVIF) and JPEG XL by their first bytes, as a folder's are by suffix:
        # they were "not an image (starts with b'\\x00\\x00\\x00\\x18ftyp')".
        "IMG_0001.HEIC": (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + noise(2000),
                          "a HEIC image, a format alexft does not read; convert it to JPEG or PNG$"),
        "photo.avif": (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + noise(2000), "an AVIF image, a format alexft"),
        "photo.jxl": (b"\xff\x0a\xfa\x7f" + noise(2000), "a JPEG XL image, a format alexft"),
        "clip.mp4": (b"\0\0\0\x18ftypmp42\0\0\0\0" + noise(2000), "not an image \\(starts with b'\\\\x00"),
        "cut.jpg": (jpeg[: len(jpeg) * 2 // 3], "truncated JPEG \\(no end-of-image marker\\)"),
        "cut-thumbnailed.jpg": (thumbnailed[: len(thumbnailed) * 2 // 3], "truncated JPEG"),
        "header-only.jpg": (jpeg[:200], "truncated JPEG|corrupt"),
        "cut.tif": (tiff[: len(tiff) // 2], "cannot decode TIFF \\(truncated or corrupt\\)$"),
        # Whole TIFFs of samples OpenCV does not read: said as such, not as damage.
        "float64.tif": (tifffile_encoded(np.random.default_rng(2).random((20, 30, 3))),
                        "a TIFF of 64-bit floating-point samples, which alexft does not read \\(8- or 16-bit grey or "
                        "colour is\\); convert it$"),
        "float32-grey.tif": (tifffile_encoded(np.ones((20, 30), np.float32)), "a TIFF of 32-bit floating-point samples"),
        "int32-grey.tif": (tifffile_encoded(np.ones((20, 30), np.int32)), "a TIFF of 32-bit integer samples"),
        # An image's first bytes, then noise: damaged, not "not an image" beside its JPEG header.
        "noise.jpg": (jpeg[:100] + noise(5000), "cannot decode JPEG \\(truncated or corrupt\\)$"),
        "noise.gif": (b"GIF89a" + noise(5000), "cannot decode GIF \\(truncated or corrupt\\)$"),
    }


def tifffile_encoded(array):
    import tifffile

    encoded = io.BytesIO()
    tifffile.imwrite(encoded, array)
    return encoded.getvalue()


def pillow_encoded(image, kind):
    from PIL import Image

    encoded = io.BytesIO()
    Image.fromarray(image).save(encoded, kind)
    return encoded.getvalue()


def noise(size, seed=3):
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_images_raise_one_line_errors_naming_the_file(tmp_path, name):
    content, cause = bad_images()[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=cause) as caught:
        preprocess.read_image(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def damaged_jpeg(seed):
    """A JPEG cut in the middle of its scan and closed with an end marker: libjpeg decodes it,
    grey below the cut, and prints "Corrupt JPEG data: premature end of data segment"."""
    jpeg = encode(random_image(seed=seed), ".jpg")
    return jpeg[: len(jpeg) // 2] + b"\xff\xd9"


def test_a_decoders_own_complaint_is_said_naming_the_file_and_nothing_unnamed_reaches_stderr(tmp_path, capfd):
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(damaged_jpeg(1))
    with pytest.warns(AlexftWarning) as said:
        image = preprocess.read_image(damaged)
    assert image.shape == (300, 400, 3)  # used, as Caffe's convert_imageset would
    assert [str(note.message) for note in said] == [
        f"{damaged}: damaged JPEG data, used as decoded (Corrupt JPEG data: premature end of data segment)"]
    assert capfd.readouterr().err == ""  # libjpeg's line went nowhere else
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preprocess.read_image(damaged)  # said once a process, not in each epoch that reads it again


def test_decodes_on_many_threads_each_name_their_own_damage_and_leave_others_lines_and_the_filters_alone(capfd):
    """Descriptor 2 is the process's: captures take turns, another thread's lines caught in one
    are passed on, and Pillow's catch_warnings on two threads at once (which left "ignore
    everything" in force for good) no longer races."""
    filters = list(warnings.filters)
    damaged = {f"d{index}.jpg": damaged_jpeg(index) for index in range(24)}
    sound = {f"s{index}.jpg": encode(random_image(seed=index), ".jpg") for index in range(24)}
    items = [pair for both in zip(damaged.items(), sound.items()) for pair in both]
    stop = threading.Event()

    def talk():  # another thread's output, at the descriptor, as a C++ library's would be
        count = 0
        while not stop.is_set():
            os.write(2, f"other line {count}\n".encode())
            count += 1
            time.sleep(0.0005)
        return count

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        talker = concurrent.futures.ThreadPoolExecutor(1).submit(talk)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            images = list(pool.map(lambda item: preprocess.decode_image(item[1], item[0]), items))
        stop.set()
        lines = talker.result()
    assert all(image.shape == (300, 400, 3) for image in images)
    named = sorted(str(note.message).split(":")[0] for note in said)
    assert named == sorted(damaged), named
    assert all(str(note.message).endswith("(Corrupt JPEG data: premature end of data segment)") for note in said)
    # Each whole, none lost; one caught in a capture comes out when it ends, after later ones.
    assert sorted(capfd.readouterr().err.splitlines(), key=lambda line: int(line.split()[-1])) == [
        f"other line {count}" for count in range(lines)]
    assert warnings.filters == filters


def test_missing_file_and_folder_are_errors(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        preprocess.read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a folder"):
        preprocess.read_image(tmp_path)


def test_a_named_pipe_or_a_device_is_read_as_a_stream_and_never_waited_on_for_ever(tmp_path, monkeypatch):
    """A link to /dev/zero filled 24 GB; a named pipe nothing wrote to hung in silence. A pipe
    is read as standard input is (a shell's <(cat photo.png)), its writer awaited a while,
    also one that starts after the reader (a re-trial's `classify p & cat photo > p` had been
    refused at once, and its writer left blocked)."""
    monkeypatch.setattr(image_files, "PIPE_WAIT_SECONDS", 3.0)
    photo = encode(random_image(), ".png")
    links = {"zero.png": "/dev/zero", "null.png": "/dev/null"}
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    for name in ("unwritten.png", "written.png", "late.png"):
        os.mkfifo(tmp_path / name)  # nothing will ever write to the first

    def write_the_photo(name, after):
        time.sleep(after)
        with open(tmp_path / name, "wb") as pipe:
            pipe.write(photo)

    for name, after in (("written.png", 0), ("late.png", 1.0)):
        threading.Thread(target=write_the_photo, args=(name, after), daemon=True).start()
    outcomes = {}

    def read_all():
        for name in ("written.png", "late.png", "unwritten.png", "zero.png", "null.png"):
            try:
                outcomes[name] = preprocess.read_image(tmp_path / name)
            except ImageError as error:
                outcomes[name] = str(error)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), f"reading blocked after {sorted(outcomes)}"
    decoded = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(outcomes["written.png"], decoded) and np.array_equal(outcomes["late.png"], decoded)
    assert outcomes["unwritten.png"] == f"{tmp_path / 'unwritten.png'}: a named pipe nothing wrote to within 3 s"
    assert outcomes["zero.png"] == (f"{tmp_path / 'zero.png'}: a character device giving more than the "
                                    f"{image_sources.MAX_IMAGE_BYTES:,}-byte limit on streams")
    assert outcomes["null.png"] == f"{tmp_path / 'null.png'}: a character device with nothing to read"


def test_pipes_devices_and_sockets_inside_a_folder_are_listed_so_that_reading_them_names_them(tmp_path, monkeypatch):
    """Inside a folder they were left out unsaid, and uncounted, while a dangling link there was
    named: a re-trial's classify, evaluate, features and finetune all passed over them."""
    monkeypatch.setattr(image_files, "PIPE_WAIT_SECONDS", 0.2)
    (tmp_path / "ok.png").write_bytes(encode(random_image(), ".png"))
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "notes.txt").symlink_to("/dev/zero")  # not an image's name: not listed
    listening = socket.socket(socket.AF_UNIX)
    try:
        listening.bind(str(tmp_path / "sock.jpg"))
        listed = preprocess.find_images([tmp_path])
        assert [path.name for path in listed] == ["fifo.png", "ok.png", "sock.jpg", "zero.jpg"]
        causes = {}
        for path in listed:
            try:
                preprocess.read_image(path)
            except ImageError as error:
                causes[path.name] = str(error).removeprefix(f"{path}: ")
    finally:
        listening.close()
    assert causes == {"fifo.png": "a named pipe nothing wrote to within 0.2 s", "sock.jpg": "is a socket, not an image",
                      "zero.jpg": f"a character device giving more than the {image_sources.MAX_IMAGE_BYTES:,}-byte "
                                  "limit on streams"}


def test_a_socket_is_refused_by_name(tmp_path):
    listening = socket.socket(socket.AF_UNIX)
    try:
        listening.bind(str(tmp_path / "s.jpg"))
        with pytest.raises(ImageError, match=re.escape(f"{tmp_path / 's.jpg'}: is a socket, not an image")):
            preprocess.read_image(tmp_path / "s.jpg")
    finally:
        listening.close()


def test_a_large_file_is_read_whole_only_if_it_starts_as_an_image(tmp_path, monkeypatch):
    photo = encode(random_image(), ".jpg")
    (tmp_path / "photo.jpg").write_bytes(photo)
    (tmp_path / "notes.jpg").write_bytes(b"some text " * 1000)
    monkeypatch.setattr(image_files, "LARGE_FILE_BYTES", 1000)  # both files are "large" now
    monkeypatch.setattr(image_files, "SNIFF_BYTES", 64)
    assert np.array_equal(preprocess.read_image(tmp_path / "photo.jpg"), cv2.imdecode(np.frombuffer(photo, np.uint8),
                                                                                      cv2.IMREAD_COLOR))
    with pytest.raises(ImageError, match=re.escape("notes.jpg: not an image (10,000 bytes, starting with b'some tex')")):
        preprocess.read_image(tmp_path / "notes.jpg")


def test_large_files_that_are_no_images_are_refused_without_reading_them_into_memory(tmp_path):
    for name, size in (("zeros.png", 1 << 30), ("huge.tif", image_files.MAX_FILE_BYTES + 1)):
        with open(tmp_path / name, "wb") as sparse:  # holes: no disk taken, read as zeros
            sparse.truncate(size)
    script = (  # VmHWM (peak RSS) is reset by exec, unlike ru_maxrss, which a child inherits from pytest.
        "import re, sys\n"
        "from alexft.preprocess import read_image\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n        read_image(path)\n    except Exception as e:\n        print(e)\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "zeros.png"), str(tmp_path / "huge.tif")],
                            capture_output=True, text=True, check=True)
    zeros, huge, peak_mib = result.stdout.strip().splitlines()
    assert zeros == f"{tmp_path / 'zeros.png'}: not an image (1,073,741,824 bytes, starting with {bytes(8)!r})"
    assert huge == (f"{tmp_path / 'huge.tif'}: {image_files.MAX_FILE_BYTES + 1:,} bytes, more than an image within "
                    f"the pixel limit takes ({image_files.MAX_FILE_BYTES:,})")
    assert int(peak_mib) < 400, f"peak memory {peak_mib} MiB: a file was read whole"


def test_data_after_the_end_marker_is_accepted(tmp_path):
    # Motion photos append a video after the JPEG's end-of-image marker.
    path = tmp_path / "motion.jpg"
    path.write_bytes(encode(random_image(), ".jpg") + b"\x00\x00\x00\x18ftypmp42" + bytes(1000))
    assert preprocess.read_image(path).shape == (300, 400, 3)
    thumbnailed = jpeg_with_thumbnail_segment(encode(random_image(), ".jpg"), encode(random_image(32, 32), ".jpg"))
    (tmp_path / "thumb.jpg").write_bytes(thumbnailed)
    assert preprocess.read_image(tmp_path / "thumb.jpg").shape == (300, 400, 3)


def png_bomb(path, side=30000):
    """A real, decodable greyscale PNG of side x side black pixels (under 1 MB on disk)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_from_the_header_without_allocating(tmp_path):
    path = png_bomb(tmp_path / "bomb.png")
    assert path.stat().st_size < 1_000_000
    # VmHWM (peak RSS) is reset by exec, unlike ru_maxrss, which a child inherits from pytest.
    script = (
        "import re, sys\n"
        "from alexft.preprocess import read_image\n"
        "try:\n    read_image(sys.argv[1])\nexcept Exception as e:\n    print(e)\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    message, peak_mib = result.stdout.strip().splitlines()
    assert message.endswith("bomb.png: refused before decoding: it declares 900,000,000 pixels, over 178,956,970; scale "
                            "it down first (AlexNet sees 256x256)")
    assert int(peak_mib) < 500, f"peak memory {peak_mib} MiB: the image was decoded"


def test_find_images_is_recursive_sorted_and_skips_hidden(tmp_path):
    for relative in ["b/2.jpg", "b/1.PNG", "a.jpeg", "notes.txt", ".hidden/x.jpg", "b/._1.jpg"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    explicit = tmp_path / "notes.txt"
    found = preprocess.find_images([tmp_path, explicit])
    assert found == [tmp_path / "a.jpeg", tmp_path / "b/1.PNG", tmp_path / "b/2.jpg", explicit]


def test_links_to_folders_elsewhere_are_followed_once_and_loops_end(tmp_path):
    """A dataset assembled from links (data/cat/more -> /mnt/cats) lost those images in silence:
    the search did not follow links to folders. They are followed, like torchvision's
    ImageFolder; a link back into the tree is not (its images are there under their own names),
    and two links to one folder list it once, under the first name."""
    for relative in ["photos/a.jpg", "photos/sub/b.jpg", "elsewhere/c.png", "elsewhere/deeper/d.jpg",
                     "elsewhere/.hidden/e.jpg"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    photos = tmp_path / "photos"
    (photos / "more").symlink_to(tmp_path / "elsewhere")
    (photos / "most").symlink_to(tmp_path / "elsewhere")
    (photos / "loop").symlink_to(".")
    (photos / "again").symlink_to("sub")
    (tmp_path / "elsewhere" / "back").symlink_to(photos)
    (tmp_path / "elsewhere" / "self").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "linked").symlink_to(photos)  # the folder given through a link: the same images
    expected = ["a.jpg", "more/c.png", "more/deeper/d.jpg", "sub/b.jpg"]
    for given in (photos, tmp_path / "linked"):
        found = preprocess.find_images(given)
        assert [str(path.relative_to(given)) for path in found] == expected


def test_a_large_photo_under_the_limit_reads_without_warnings(tmp_path):
    """100 megapixels: over Pillow's warning size, under ours; Pillow's header read must stay silent."""
    path = png_bomb(tmp_path / "large.png", side=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = preprocess.read_image(path)
    assert image.shape == (10_000, 10_000, 3)


# --- Caffe's mean image (--mean imagenet_mean.binaryproto) -------------------------------


def write_binaryproto(path, mean_chw, packed=False, legacy=True):
    """A BlobProto as Caffe's compute_image_mean writes it: num 1, channels, height, width
    (legacy dimensions) and the values channel-major, BGR."""
    from caffemodel import message_classes

    blob = message_classes(packed)["BlobProto"]()
    if legacy:
        blob.num, (blob.channels, blob.height, blob.width) = 1, mean_chw.shape
    else:
        blob.shape.dim.extend((1,) + mean_chw.shape)
    blob.data.extend(mean_chw.ravel().tolist())
    path.write_bytes(blob.SerializeToString())
    return path


def caffe_transform(datum_chw, mean_chw, h_off, w_off, mirror, crop=227):
    """Caffe's DataTransformer::Transform for one crop, index for index as its C++ computes
    it: top[(c*crop + h)*crop + (crop-1-w if mirror else w)] = datum[i] - mean[i] with
    i = (c*H + h_off + h)*W + w_off + w. Returns (crop, crop, C) to compare with alexft's views."""
    channels, height, width = datum_chw.shape
    c, h, w = np.meshgrid(np.arange(channels), np.arange(crop), np.arange(crop), indexing="ij")
    data_index = (c * height + h_off + h) * width + w_off + w
    top_index = (c * crop + h) * crop + np.where(mirror, crop - 1 - w, w)
    top = np.empty(channels * crop * crop, np.float32)
    top[top_index.ravel()] = (datum_chw.ravel()[data_index.ravel()].astype(np.float32)
                              - mean_chw.ravel()[data_index.ravel()])
    return top.reshape(channels, crop, crop).transpose(1, 2, 0)


def test_the_mean_image_is_subtracted_as_caffes_data_layer_does(tmp_path):
    from alexft.weights.caffe import read_mean_image

    rng = np.random.default_rng(3)
    mean_chw = (rng.random((3, 256, 256)) * 255).astype(np.float32)  # no symmetry a mistake could hide behind
    for name in ("chelsea", "coffee"):
        for legacy in (True, False):
            path = write_binaryproto(tmp_path / f"mean_{legacy}.binaryproto", mean_chw, packed=not legacy, legacy=legacy)
            mean = read_mean_image(path)
            np.testing.assert_array_equal(mean, mean_chw.transpose(1, 2, 0))
            views = preprocess.image_views(photo_paths()[name], ten_crop=True, preprocessing=preprocess.Preprocessing(mean))
            datum = cv2.resize(cv2.imread(str(photo_paths()[name]), cv2.IMREAD_COLOR), (256, 256),
                               interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)  # what convert_imageset stores
            offsets = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]  # Caffe's oversample: corners, centre
            expected = [caffe_transform(datum, mean_chw, h, w, mirror) for mirror in (False, True) for h, w in offsets]
            np.testing.assert_allclose(views, np.stack(expected), rtol=0, atol=1e-4)
            centre = preprocess.image_views(photo_paths()[name], preprocessing=preprocess.Preprocessing(mean))
            np.testing.assert_allclose(centre[0], expected[4], rtol=0, atol=1e-4)
    flat = np.broadcast_to(preprocess.MEAN_BGR[:, None, None], (3, 256, 256)).astype(np.float32)
    same = read_mean_image(write_binaryproto(tmp_path / "flat.binaryproto", flat))
    np.testing.assert_allclose(preprocess.image_views(photo_paths()["chelsea"], preprocessing=preprocess.Preprocessing(same)),
                               preprocess.image_views(photo_paths()["chelsea"]), rtol=0, atol=1e-4)


def test_caffes_python_mean_npy_is_the_same_mean_as_its_binaryproto(tmp_path):
    """Caffe's Python ships the mean as caffe/imagenet/ilsvrc_2012_mean.npy, the binaryproto's
    blob saved by numpy (3, 256, 256), float64: a re-trial's --mean with it read as a protobuf."""
    from alexft.errors import WeightsError
    from alexft.weights.caffe import read_mean_image

    mean_chw = (np.random.default_rng(5).random((3, 256, 256)) * 255).astype(np.float32)
    np.save(tmp_path / "ilsvrc_2012_mean.npy", mean_chw.astype(np.float64))
    from_npy = read_mean_image(tmp_path / "ilsvrc_2012_mean.npy")
    assert from_npy.dtype == np.float32
    np.testing.assert_array_equal(from_npy, read_mean_image(write_binaryproto(tmp_path / "m.binaryproto", mean_chw)))
    np.save(tmp_path / "hwc.npy", mean_chw.transpose(1, 2, 0))  # channels last: not Caffe's layout
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "both.npz", mean=mean_chw)
    for name, said in (("hwc.npy", r"not a Caffe mean file \(such as ilsvrc_2012_mean.npy\): an array of float32 "
                                   r"\(256, 256, 3\), not 3x256x256 \(channels first, BGR\)"),
                       ("objects.npy", r"not a readable .npy mean \(.*pickle.*\)"),
                       ("both.npz", r"not a Caffe mean file \(.*\): it is a zip archive \(an .npz\?\); give the mean "
                                    "itself")):
        with pytest.raises(WeightsError, match=f"^{re.escape(str(tmp_path / name))}: {said}"):
            read_mean_image(tmp_path / name)


def test_an_unusable_mean_file_is_refused_by_name(tmp_path):
    from alexft.weights.caffe import read_mean_image
    from alexft.errors import WeightsError

    small = write_binaryproto(tmp_path / "small.binaryproto", np.zeros((3, 100, 100), np.float32))
    with pytest.raises(WeightsError, match=r"small.binaryproto: not a Caffe mean file \(such as imagenet_mean.binaryproto\): "
                                           r"a blob of shape \(1, 3, 100, 100\)"):
        read_mean_image(small)
    (tmp_path / "page.binaryproto").write_bytes(b"<html>404</html>")
    with pytest.raises(WeightsError, match=r"page.binaryproto: not a Caffe mean file \(.*\): it is an HTML"):
        read_mean_image(tmp_path / "page.binaryproto")
    # A photo or a note named by mistake: said so, not as a protobuf field of a "Caffe model"
    (tmp_path / "notes.txt").write_text("mean of my photos\n")
    for path, said in ((photo_paths()["chelsea"], "it is a PNG image"),
                       (tmp_path / "notes.txt", "it is text \\(it starts with b'mean of '\\)")):
        with pytest.raises(WeightsError, match=rf"^{re.escape(str(path))}: not a Caffe mean file \(such as "
                                               rf"imagenet_mean.binaryproto\): {said}$"):
            read_mean_image(path)
    cut = tmp_path / "cut.binaryproto"
    cut.write_bytes(write_binaryproto(tmp_path / "whole.binaryproto", np.ones((3, 256, 256), np.float32)).read_bytes()[:5000])
    with pytest.raises(WeightsError, match="cut.binaryproto: not a Caffe mean file"):
        read_mean_image(cut)
    (tmp_path / "empty.binaryproto").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.binaryproto: mean file is empty"):
        read_mean_image(tmp_path / "empty.binaryproto")


def bilinear_float64(image, size=256):
    """Bilinear resizing in float64 from its definition, as Caffe's classify.py gets it from
    scikit-image (order 1, no anti-aliasing): output pixel (y, x) samples the input at
    ((y + 0.5) * H / size - 0.5, (x + 0.5) * W / size - 0.5), pixel centres aligned, edges repeated."""
    height, width = image.shape[:2]

    def taps(out, size_in):
        position = np.clip((np.arange(out) + 0.5) * size_in / out - 0.5, 0, size_in - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, position - low

    (y0, y1, fy), (x0, x1, fx) = taps(size, height), taps(size, width)
    image = image.astype(np.float64)
    top = image[y0][:, x0] * (1 - fx)[None, :, None] + image[y0][:, x1] * fx[None, :, None]
    bottom = image[y1][:, x0] * (1 - fx)[None, :, None] + image[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def test_float_resizing_is_bilinear_in_floating_point_and_8bit_is_within_a_grey_level_of_it():
    """--resize float against a float64 reference written from the definition; the default
    (OpenCV on 8-bit pixels, as convert_imageset) rounds to whole grey levels on top."""
    worst_uint8 = 0.0
    for name in ("chelsea", "coffee", "astronaut", "china"):  # down- and upscaled, grey and colour
        image = preprocess.read_image(photo_paths()[name])
        expected = bilinear_float64(image) - preprocess.MEAN_BGR
        floated = preprocess.resize_and_subtract_mean(image, preprocess.Preprocessing(float_resize=True))
        np.testing.assert_allclose(floated, expected, rtol=0, atol=1e-4, err_msg=name)
        worst_uint8 = max(worst_uint8, float(np.abs(preprocess.resize_and_subtract_mean(image) - expected).max()))
    assert 0.3 < worst_uint8 <= 0.8  # seen: 0.753 (rounding to whole levels, OpenCV's 11-bit coefficients)


def test_inputs_named_twice_or_inside_another_are_read_once(tmp_path):
    """`d d/cats`, `d link-to-d` and `d d/cats/1.jpg` listed images twice (and a class folder
    given so lost its labels); what the folder's listing would not list stays, so that a text
    file or a hidden photo named by mistake is still reported."""
    for relative in ["d/cats/1.jpg", "d/dogs/2.jpg", "d/.hidden/3.jpg", "d/notes.txt"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    d = tmp_path / "d"
    (tmp_path / "link").symlink_to(d)
    (tmp_path / "photo.jpg").symlink_to(d / "cats" / "1.jpg")  # another name for one photo, on purpose: kept
    said = []
    given = [d, d / "cats", tmp_path / "link", d / "cats" / "1.jpg", tmp_path / "link" / "dogs" / "2.jpg",
             d / ".hidden" / "3.jpg", d / "notes.txt", tmp_path / "photo.jpg", f"{d}/./cats/../"]
    assert preprocess.distinct_inputs(given, said.append) == [d, d / ".hidden" / "3.jpg", d / "notes.txt",
                                                              tmp_path / "photo.jpg"]
    assert said == [f"each image is read once: 5 inputs named again or inside a folder also given are left out (e.g. "
                    f"{d / 'cats'}, inside {d})"]
    said.clear()  # one inside a folder is said with the folder (a helper read the kept copy's name as the dropped one's)
    assert preprocess.distinct_inputs([d / "cats" / "1.jpg", d], said.append) == [d]
    assert said == [f"each image is read once: 1 input named again or inside a folder also given is left out (e.g. "
                    f"{d / 'cats' / '1.jpg'}, inside {d})"]
    found = preprocess.find_images(given)
    assert found == [d / "cats/1.jpg", d / "dogs/2.jpg", d / ".hidden/3.jpg", d / "notes.txt", tmp_path / "photo.jpg"]
    # A photo named inside a folder also given, that is not there, is no repeat: the listing does
    # not find it, and it was dropped as "read once" instead of said as not found (Python API).
    said.clear()
    missing = d / "cats" / "nosuch.jpg"
    assert preprocess.distinct_inputs([missing, d], said.append) == [missing, d] and said == []
    assert preprocess.find_images([missing, d])[0] == missing
