"""The pinned image pipeline shared by classify, training and evaluation.

Caffe's recipe for bvlc_alexnet: colour image as 8-bit BGR -> resize to 256x256 ignoring
the aspect ratio (bilinear) -> float32 -> subtract the ImageNet BGR mean -> 227x227 crops.
Files are read as bytes and decoded with `cv2.imdecode`, so every caller sees the same
pixels and non-ASCII paths work everywhere.
"""
import functools
import io
import os
import re
import reprlib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .architecture import INPUT_SIZE
from .errors import WARNING_FILTERS, AlexftWarning, ImageError, warn_user  # noqa: F401  (warn_user: others take it from here)
from .image_files import MAX_PIXELS, read_file, signature_format
from .image_sources import UnreadableFolder, UrlImage, is_url
from .quiet import said_on_descriptor_2

# OpenCV's own log lines ("[ WARN:0@6.7] global grfmt_png.cpp ... buffer is incomplete", "[ERROR:0@0.1]
# global loadsave.cpp ... imdecode_ ... 'readBlock'") would come before, and say less than, the one
# line naming the file that every bad image gets here.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

# What the decoders OpenCV is built with print on stderr themselves, naming no file (libjpeg's
# warnings, jerror.h's JWRN_*; libpng's; libtiff's): captured around each decode and said
# again with the file's name. Anything else caught meanwhile (another thread's line) is passed on.
_DECODER_SAID = re.compile(  # at a line's start, so that alexft's own line quoting one is not taken for it
    r"(?m)(?:^|(?<=\r))(?:Corrupt JPEG data: |Premature end of JPEG file|Invalid SOS parameters for sequential JPEG|Warning: unknown "
    r"JFIF revision|Unknown Adobe color transform|Inconsistent progression sequence|Application transferred too many "
    r"scanlines|libpng (?:warning|error): |TIFF\w*: )[^\n]*\n?")

RESIZE = 256
CROP = INPUT_SIZE
MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434], dtype=np.float32)

# Caffe's `oversample`: four corners, then the centre, then the same five mirrored.
_EDGE = RESIZE - CROP
_CENTRE = _EDGE // 2
TEN_CROP_OFFSETS = ((0, 0), (0, _EDGE), (_EDGE, 0), (_EDGE, _EDGE), (_CENTRE, _CENTRE))

IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .jfif .png .bmp .dib .webp .tif .tiff .ppm .pgm .pbm .pnm .gif .jp2".split()
)
# Photo formats users have (phones, cameras, editors) that alexft does not read: left out of a
# folder's images, but said, not dropped in silence.
UNREAD_IMAGE_SUFFIXES = frozenset(
    ".heic .heif .avif .jxl .svg .psd .ico .icns .tga .pcx .sgi .dds .xcf .exr .dng .raw .cr2 .cr3 .nef .arw .orf "
    ".rw2 .raf".split()
)


def read_image(path):
    """Read an image file as an (H, W, 3) uint8 BGR array; raise ImageError naming the cause."""
    return decode_image(read_file(path), name=str(path))


def decode_image(data, name="<bytes>"):
    """Decode encoded image bytes (JPEG, PNG, ...) to (H, W, 3) uint8 BGR after checking the header.

    Grey images are tiled to three channels, alpha is dropped, 16-bit is scaled to 8-bit and
    EXIF orientation is applied (OpenCV's IMREAD_COLOR).
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    image_format, (width, height) = _read_header(data, name)
    if width * height > MAX_PIXELS:  # Pillow checks this too, unless a program turned its check off
        raise ImageError(f"{name}: refused before decoding: {image_format} declares {width}x{height} pixels, over "
                         f"{MAX_PIXELS:,}; scale it down first (AlexNet sees 256x256)")
    if image_format == "JPEG" and not _jpeg_is_complete(data):
        raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)")
    with said_on_descriptor_2() as said:
        try:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            image = None
    complaints = _decoders_complaints("".join(said))
    if image is None:
        raise ImageError(f"{name}: {_undecoded(image_format, data, complaints)}")
    # Decoded all the same, as Caffe's convert_imageset would have (grey where data was missing);
    # said once a process, not in every epoch that reads the file again.
    if complaints and name not in _DAMAGE_SAID:
        _DAMAGE_SAID[name] = f"damaged {image_format} data, used as decoded ({'; '.join(complaints)})"
        warn_user(f"{name}: {_DAMAGE_SAID[name]}")
    return image


_DAMAGE_SAID = {}  # {name: what was said} of the images said to be damaged (few)


def damage_said(name):
    """What was said of image `name` (a path or URL as given) being damaged yet used, or None:
    a result on a machine's line (classify --json) carries it too."""
    return _DAMAGE_SAID.get(str(name))

# Pillow's names of the formats OpenCV decodes; others it knows (TGA, ICO, PSD, ...) are not read.
DECODED_FORMATS = frozenset("JPEG MPO PNG GIF TIFF BMP DIB WEBP PPM JPEG2000".split())


def _not_read(image_format):
    # (as the letters are read: an ICO, an SGI; a HEIC and a JPEG are said as words)
    article = "an" if image_format[0] in "AEFHILMNORSX" and not image_format.startswith(("HEI", "JPEG")) else "a"
    return f"{article} {image_format} image, a format alexft does not read; convert it to JPEG or PNG"


def _undecoded(image_format, data, complaints):
    """Why OpenCV gave no image: a format it does not read, a PNG cut short, or its own words."""
    said = "; ".join(complaints)
    if image_format not in DECODED_FORMATS:  # named on the command line; a folder's listing leaves these out
        return _not_read(image_format)
    if _truncated_png(image_format, data):
        return f"truncated PNG (no end chunk{'; ' + said if said else ''})"
    if image_format == "TIFF" and (kind_not_read := _tiff_samples_not_read(data)):
        return kind_not_read
    return f"cannot decode {image_format} ({said or 'corrupt or truncated'})"


def _tiff_samples_not_read(data):
    """"a TIFF of 32-bit floating-point samples, ..." for the sample kinds OpenCV's colour read
    refuses (scientific TIFFs: floats, 32- and 64-bit integers), else None (then it is damage)."""
    from PIL import TiffImagePlugin

    try:
        with warnings.catch_warnings():  # ("Corrupt EXIF data" of a cut file: said as damage below)
            warnings.simplefilter("ignore")
            directory = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
            stream = io.BytesIO(data)
            stream.seek(directory.next)
            directory.load(stream)
        bits, kind = (directory.get(258) or (8,))[0], (directory.get(339) or (1,))[0]
    except Exception:  # noqa: BLE001  (a header too damaged to read: damage, said as such)
        return None
    if kind != 3 and bits <= 16:
        return None
    samples = f"{bits}-bit {'floating-point' if kind == 3 else 'integer'} samples"
    return f"a TIFF of {samples}, which alexft does not read (8- or 16-bit grey or colour is); convert it"


def _decoders_complaints(text):
    """The decoder's own lines in `text`, what was captured around a decode; the rest (another
    thread's output caught meanwhile) is written on to stderr."""
    # libpng's warnings are about metadata ("iCCP: known incorrect sRGB profile", on countless
    # files), not pixels: dropped, as an image is not damaged by them.
    complaints = [line.strip() for line in _DECODER_SAID.findall(text) if not line.startswith("libpng warning:")]
    rest = _DECODER_SAID.sub("", text)
    if rest:
        try:
            os.write(2, rest.encode(errors="replace"))
        except OSError:
            pass
    return list(dict.fromkeys(complaints))  # (libjpeg may say the same for each component)


def _truncated_png(image_format, data):
    return image_format == "PNG" and b"IEND" not in data[-64:]


def _read_header(data, name):
    """The format and declared size from the header alone (Pillow opens lazily)."""
    try:
        # Pillow only reads the header here; its warnings (corrupt EXIF, photos over its
        # 89-megapixel warning size) would reach the terminal as multi-line Python warnings,
        # while our own checks decide what is refused.
        with WARNING_FILTERS, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as header:
                return header.format, header.size
    except Image.DecompressionBombError as error:  # over MAX_PIXELS, said in our words, not "DOS attack"
        declared = re.search(r"\((\d+) pixels\)", str(error))
        said = (f"it declares {int(declared.group(1)):,} pixels, over {MAX_PIXELS:,}; scale it down first (AlexNet "
                "sees 256x256)") if declared else str(error)
        raise ImageError(f"{name}: refused before decoding: {said}") from None
    except UnidentifiedImageError:
        image_format = signature_format(data)
        if _truncated_png(image_format, data):
            raise ImageError(f"{name}: truncated PNG (no end chunk)") from None
        if image_format == "TIFF" and (kind_not_read := _tiff_samples_not_read(data)):  # (64-bit: not opened)
            raise ImageError(f"{name}: {kind_not_read}") from None
        if image_format:  # an image's first bytes, then a header Pillow gives up on
            raise ImageError(f"{name}: cannot decode {image_format} (truncated or corrupt)") from None
        if unread := _unread_photo_format(data):
            raise ImageError(f"{name}: {_not_read(unread)}") from None
        raise ImageError(f"{name}: not an image ({_describe_start(data)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        if _truncated_png(signature_format(data), data):
            raise ImageError(f"{name}: truncated PNG (no end chunk)") from None
        if "truncated" in str(error).lower():  # Pillow's "Truncated File Read": the header is cut short
            raise ImageError(f"{name}: truncated {signature_format(data) or 'image'} (it ends inside its header)") \
                from None
        raise ImageError(f"{name}: corrupt image header ({error})") from None


# The "ftyp" box's brands of the ISO media files phones save photos in (a folder's are told by suffix).
_PHOTO_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC", b"hevx": "HEIC",
                 b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def _unread_photo_format(data):
    """HEIC, HEIF or AVIF by its first box, JPEG XL by its signature: a phone's photo, else None."""
    if data[4:8] == b"ftyp":
        return _PHOTO_BRANDS.get(data[8:12])
    if data.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "JPEG XL"
    return None


def _describe_start(data):
    start = data[:64].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    return f"starts with {data[:8]!r}"


def _jpeg_is_complete(data):
    """True if an end-of-image marker follows the first start-of-scan.

    OpenCV decodes a truncated JPEG partly grey with only a warning, so check the markers:
    walk the header segments to the first SOS (an EXIF thumbnail inside APP1 has its own
    end marker, skipped this way), then look for EOI in the scan data, where byte stuffing
    keeps 0xFFD9 from occurring by chance. Data appended after EOI (motion photos) is fine.
    """
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", position) != -1
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return False


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """The two choices Caffe's own tools differ on; the defaults are alexft's recipe.

    `mean`: None subtracts the mean pixel (MEAN_BGR); Caffe's (256, 256, 3) mean image
    (`caffe.read_mean_image`) is subtracted whole before cropping, which is what Caffe's data
    layer does: each crop loses the mean image's pixels under it (mirrored with the crop).
    `float_resize`: resize in floating point, as Caffe's classify.py does (scikit-image,
    bilinear, no anti-aliasing), instead of on 8-bit pixels, as its convert_imageset does when
    it builds the training and validation databases. They differ by under a grey level.
    """

    mean: Optional[np.ndarray] = None
    float_resize: bool = False


def resize_and_subtract_mean(image, preprocessing=None):
    """(H, W, 3) uint8 BGR -> (256, 256, 3) float32, mean-subtracted. The input is not modified."""
    preprocessing = preprocessing or Preprocessing()
    if preprocessing.float_resize:
        image = image.astype(np.float64)  # no rounding to 8 bits after interpolating
    if image.shape[:2] != (RESIZE, RESIZE):
        image = cv2.resize(image, (RESIZE, RESIZE), interpolation=cv2.INTER_LINEAR)
    return image.astype(np.float32) - (MEAN_BGR if preprocessing.mean is None else preprocessing.mean)


def center_crop(prepared):
    """The centre 227x227 crop (offset 14, 14) of a 256x256 prepared image."""
    return prepared[_CENTRE : _CENTRE + CROP, _CENTRE : _CENTRE + CROP]


def ten_crops(prepared):
    """Caffe's 10 crops of a 256x256 prepared image, as a (10, 227, 227, 3) array."""
    corners = [prepared[top : top + CROP, left : left + CROP] for top, left in TEN_CROP_OFFSETS]
    crops = np.stack(corners)
    return np.concatenate([crops, crops[:, :, ::-1]])


def image_views(path, ten_crop=False, preprocessing=None):
    """Read a file (or an image source with `read_bytes()`, e.g. a URL) and return the
    network's input views: (1 or 10, 227, 227, 3) float32. `preprocessing`: a Preprocessing."""
    source = _image_source(path)
    image = read_image(source) if isinstance(source, Path) else decode_image(source.read_bytes(), str(source))
    prepared = resize_and_subtract_mean(image, preprocessing)
    if ten_crop:
        return ten_crops(prepared)
    return center_crop(prepared)[np.newaxis].copy()


def is_image_file(path):
    """An image by its suffix; hidden files (e.g. macOS '._photo.jpg' companions) are not."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def path_list(paths):
    """One path (str or os.PathLike) or an iterable of them, as a list of Paths; anything else
    (a number, bytes, None) is a TypeError: a string is never taken letter by letter. Image
    sources that are not files (objects with `read_bytes()`) pass through as they are, and
    http(s) URLs given as strings become such sources."""
    if isinstance(paths, (str, os.PathLike)) or _is_source(paths):
        return [_as_path(paths)]
    in_memory = _in_memory(paths) or "".join(_in_memory(item) for item in _first(paths))
    if in_memory:
        raise TypeError(f"expected a path (str or os.PathLike) or a list of paths, got {in_memory}: for images in "
                        "memory, use alexft.preprocess_input, then the model (for a layer: "
                        "alexft.truncated(model, layer))")
    if hasattr(paths, "read") and not _is_source(paths):  # iterating an open file would give its lines
        raise TypeError(f"expected a path (str or os.PathLike) or a list of paths, got an open file: give its name "
                        f"({getattr(paths, 'name', 'file.name')!r})")
    if isinstance(paths, (bytes, bytearray)) or not isinstance(paths, Iterable):
        raise TypeError(f"expected a path (str or os.PathLike) or a list of paths, got {type(paths).__name__}")
    listed = list(paths)
    for item in listed:
        if not isinstance(item, (str, os.PathLike)) and not _is_source(item):
            raise TypeError(f"expected a path (str or os.PathLike) or a list of paths; the list holds a "
                            f"{type(item).__name__}: {reprlib.repr(item)}")
    return [_as_path(item) for item in listed]


def _image_source(item):
    """A Path for a file name, or an image source with `read_bytes()` (a URL given as a string
    becomes one); images already in memory are refused, pointing to what takes them."""
    if isinstance(item, (str, os.PathLike)) or _is_source(item):
        return _as_path(item)
    said = _in_memory(item)
    raise TypeError(f"expected a path (str or os.PathLike) or an image source, got {said or type(item).__name__}"
                    + (": for images in memory, use alexft.preprocess_input" if said else ""))


def _in_memory(item):
    """What an image already in memory is, in words ("pixels (an array)", "a PIL image"), or ''."""
    if _is_pixels(item):
        return "pixels (an array)"
    if is_tensor(item) and hasattr(item, "shape"):
        return "a tensor"
    return "a PIL image" if isinstance(item, Image.Image) else ""


def is_tensor(item):
    """A TensorFlow or Keras tensor, told apart without importing TensorFlow."""
    return type(item).__module__.startswith(("tensorflow", "keras")) and not isinstance(item, np.ndarray)


def _is_pixels(item):
    """A numeric array (an image in memory); an array of strings is a list of paths (a features file's)."""
    return isinstance(item, np.ndarray) and item.dtype.kind in "uifb"


def _first(paths):
    """The first item of a list or tuple (not of a generator, which would be used up), to see what it holds."""
    return paths[:1] if isinstance(paths, (list, tuple)) else ()


def _is_source(item):
    return hasattr(item, "read_bytes") and not isinstance(item, (str, bytes, os.PathLike))


def _as_path(item):
    if _is_source(item):
        return item
    if isinstance(item, str) and is_url(item):  # as on the command line; Path() would fold "//" into "/"
        return UrlImage(item)
    return Path(item)


def find_images(paths, say=None):
    """Expand files and folders (recursively) into a list of paths in a stable order.

    `paths`: one path or a list of them. Files named explicitly are kept whatever their
    suffix, so a bad one is reported, not silently dropped. Folders contribute their image
    files, sorted, hidden folders skipped; a folder that cannot be listed is an UnreadableFolder
    input, which fails when read. `say`: called with a line about each folder that gives no
    images, or holds photos in formats alexft does not read (`warn_user` in Python).
    """
    found = []
    for path in distinct_inputs(path_list(paths), say):
        if is_folder(path):
            unread, unsearchable = [], []
            images = images_below(path, unread, unsearchable)
            if say is not None and (unread or not images) and path not in unsearchable:
                say(f"{path}: {_folder_said(images, unread, path)}")
            found.extend(images + [UnreadableFolder(folder) for folder in unsearchable])
        else:
            found.append(path)
    return each_once(found, say, key=file_identity)  # (two folders may link to a third)


def each_once(items, say=None, key=None):
    """`items` (paths, URLs, images or folders) in order, each once, telling `say` of any left
    out: `d3 d3`, or a folder and a file in it, wrote the same rows twice. Files compare as
    absolute names, not followed links (a dataset made of links names one photo twice on
    purpose); folders as the folder they are, a link to one being that folder. `key`: the
    identity to compare, `_identity` by default (`file_identity` for images listed from folders)."""
    _real_folder.cache_clear()  # (links may have changed since the last call)
    key = key or _identity
    kept, repeated = without_repeats([(item, key(item)) for item in items])
    say_left_out([f"{item}, named again" for item in repeated], say)
    return [item for item, _ in kept]


def distinct_inputs(items, say=None):
    """The inputs as `each_once` leaves them, less those inside a folder also given (`d3
    d3/cats`): what remains says whether the inputs are one class folder, with its labels."""
    _real_folder.cache_clear()
    kept, repeated = without_repeats([(item, _identity(item)) for item in items])
    folders = [(item, identity) for item, identity in kept if is_folder(item)]
    inside = {}  # index in kept -> the folder given that lists it
    for index, (item, identity) in enumerate(kept if folders else []):
        within = next((folder for folder, real in folders if _listed_within(item, identity, real)), None)
        if within is not None:
            inside[index] = within
    say_left_out([f"{kept[index][0]}, inside {folder}" for index, folder in sorted(inside.items())]
                  + [f"{item}, named again" for item in repeated], say)
    return [item for index, (item, _) in enumerate(kept) if index not in inside]


def _listed_within(item, identity, folder):
    """Whether listing `folder` (a real path) lists `item` (known as `identity`) too: a folder
    or an image below it, not under a hidden name, and there (the listing skips those; a file
    named on its own is kept, so that a text file, a hidden photo or a missing one named by
    mistake is reported)."""
    if identity is None or is_url(identity) or not identity.startswith(folder.rstrip(os.sep) + os.sep):
        return False
    if not os.path.lexists(identity):  # no listing finds it: "file not found", not "read once"
        return False
    hidden = any(part.startswith(".") for part in Path(identity).relative_to(folder).parts)
    return not hidden and (is_folder(item) or is_image_file(item))


def without_repeats(named):
    """(kept [(item, identity)], repeated [item]) from (item, identity) pairs; an identity of
    None (standard input: `- -` is refused on its own) is never a repeat."""
    seen, kept, repeated = set(), [], []
    for item, identity in named:
        if identity is not None and identity in seen:
            repeated.append(item)
            continue
        kept.append((item, identity))
        seen.add(identity)
    return kept, repeated


def say_left_out(left_out, say):
    """`left_out`: each input not read, said with why ("x.jpg, named again", "d/x.jpg, inside d")."""
    if left_out and say is not None:
        one = len(left_out) == 1
        say(f"each image is read once: {len(left_out)} input{'' if one else 's'} named again or inside a folder also "
            f"given {'is' if one else 'are'} left out (e.g. {left_out[0]})")


def _identity(item):
    """What makes two inputs the same: a URL's text, a file's absolute name, a folder's real
    path; None for standard input, which is never the same as another."""
    name = file_identity(item)
    return os.path.realpath(name) if name is not None and not is_url(name) and os.path.isdir(name) else name


def file_identity(item):
    """`_identity` for files: the real folder a file is in and its own name (a link to a photo
    is another name for it; a photo reached through a link to its folder is the same one)."""
    name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(item)
    if is_url(name):
        return name
    if not isinstance(item, (str, os.PathLike)):
        return None
    folder, own = os.path.split(os.path.abspath(name))
    return os.path.join(_real_folder(folder), own)


@functools.lru_cache(maxsize=4096)  # the images of a folder share it
def _real_folder(folder):
    return os.path.realpath(folder)


def _folder_said(images, unread, folder):
    if not unread:
        return "no images in this folder"
    return f"holds {unread_photos_said(unread, folder, only=True)}" if not images else unread_photos_said(unread, folder)


def unread_photos_said(unread, root, only=False):
    """The one wording for photos `images_below` found in formats alexft does not read: "N
    photo(s) ... are left out (e.g. ...)", or with `only` "only photos ..." for a folder that
    holds nothing else (the caller says "holds"). Paths are named relative to `root`."""
    what = ("only photos in formats alexft does not read" if only
            else f"{len(unread)} photo(s) in formats alexft does not read are left out")
    return f"{what} (e.g. {Path(unread[0]).relative_to(root)}); convert them to JPEG or PNG"


def images_below(folder, unread=None, unsearchable=None, walked=None, within=None):
    """Image files below `folder`, recursively, sorted; hidden files and folders skipped.
    Links to folders elsewhere are followed, as torchvision's ImageFolder does (datasets are
    often assembled from links), each of those folders listed once; a link to a folder inside
    `folder` is not, its images being listed under their own names (and a loop ends there).
    A dangling symbolic link with an image's name is kept, so that reading it reports it.
    `unread`: a list that collects the photos in formats alexft does not read (HEIC, ...);
    `unsearchable`: one that collects the folders that cannot be listed (their images are
    left out); `walked`: one that collects ((device, inode), path) of each folder listed;
    `within`: the folder whose inside links are not followed, if wider than `folder` (a
    dataset's, for one of its class folders)."""
    images, held = [], []
    for path in _entries_below(folder, unsearchable, walked, within):
        if _listed_image(path):
            images.append(path)
        elif _unread_photo(path):
            held.append(path)
    if unread is not None:
        unread.extend(sorted(held))
    return sorted(images)


def holds_images(folder):
    """Whether `folder` may hold images: one is found below it (a photo alexft does not read
    counts), or a folder below it cannot be listed. Stops at the first: a wrong data folder
    may hold a million files."""
    unsearchable = []
    return any(_listed_image(path) or _unread_photo(path) for path in _entries_below(folder, unsearchable)) or bool(
        unsearchable)


def _unread_photo(path):
    """A photo in a format alexft does not read (HEIC, ...), which a listing names."""
    return path.suffix.lower() in UNREAD_IMAGE_SUFFIXES and not path.name.startswith(".")


def _entries_below(folder, unsearchable=None, walked=None, within=None):
    """Every entry below `folder` that is not a folder (names of files, of links to files, of
    links that lead nowhere); hidden folders skipped."""
    inside = os.path.join(os.path.realpath(within or folder), "")
    seen, pending = set(), [folder]
    while pending:
        current = pending.pop()
        try:
            identity = (info := os.stat(current)).st_dev, info.st_ino
            if identity in seen:  # two links to one folder elsewhere, or a loop out there
                continue
            seen.add(identity)
            if walked is not None:
                walked.append((identity, current))
            if not os.access(current, os.R_OK | os.X_OK):
                raise PermissionError
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda entry: entry.name, reverse=True)  # (a stack: the first name's folder goes first)
        except PermissionError:
            if unsearchable is not None:
                unsearchable.append(current)
            continue
        except OSError:  # gone or replaced while listed: nothing in it to name
            continue
        for entry in entries:
            path = current / entry.name
            if not _is_folder_entry(entry):
                yield path
            elif not entry.name.startswith(".") and not (
                    entry.is_symlink() and os.path.join(os.path.realpath(path), "").startswith(inside)):
                pending.append(path)


def _is_folder_entry(entry):
    try:
        return entry.is_dir()  # (follows a link)
    except OSError:  # a link whose target cannot be looked at, or a link loop: listed as a name
        return False


def _listed_image(path):
    """An image's name on anything but a folder: a file, a dangling link, a link whose target
    cannot be looked at, a named pipe, a device or a socket. Reading the others says why they
    cannot be used (they had been left out unsaid, and uncounted)."""
    if not is_image_file(path):
        return False
    try:
        return not path.is_dir()
    except OSError:  # (Python 3.11 raises PermissionError for a target in an unsearchable folder)
        return True


def is_within(path, folder):
    """`path` is `folder` or below it (links resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def is_folder(path):
    """Whether `path` (a Path; image sources are not) is a folder; False, not PermissionError, for
    one inside a folder that cannot be searched: reading it then says why."""
    try:
        return isinstance(path, Path) and path.is_dir()
    except OSError:
        return False
