"""What `alexft weights info` and `alexft weights convert` do: inspect any weights file, and
turn any readable one into our pickle-free `.npz`, which loads several times faster; and the
Python API's `save_weights`, which guards what it would replace as convert does."""
import collections
import os
from pathlib import Path

from .. import architecture as arch
from ..atomic import archive_names, check_writable, refuse_folder_for_file, what_it_holds
from ..errors import WeightsError, warn_user
from . import caffe
from . import formats as weights_io
from .download import file_digests



def describe(path):
    """A plain dict describing a weights file, also when it does not fit AlexNet.

    Keys: path, format, format_description, bytes, sha256, sha1, layers (name, shape and dtype of
    weights and biases), parameters, classes, class_names (stored ones, or None),
    canonical_layout (exactly bvlc_alexnet's shapes, 1000 classes) and problem (why the
    file cannot be used, or None).
    """
    path = Path(path)
    params, class_names, file_format = weights_io.read(path)
    try:
        weights_io.check(params, path, class_names=class_names)
        problem = None
    except WeightsError as error:
        problem = str(error)
    fc8 = params.get("fc8", (None,))[0]
    classes = int(fc8.shape[-1]) if getattr(fc8, "ndim", 0) == 2 else None
    canonical = arch.parameter_shapes(arch.IMAGENET_CLASSES)
    digests = file_digests(path)
    return {
        "path": str(path),
        "format": file_format,
        "format_description": weights_io.FORMATS[file_format],
        "bytes": path.stat().st_size,
        "sha256": digests["sha256"],
        "sha1": digests["sha1"],
        "layers": [_describe_layer(name, params[name]) for name in _ordered(params)],
        "parameters": int(sum(getattr(array, "size", 0) for pair in params.values() for array in pair)),
        "classes": classes,
        "class_names": class_names,
        "canonical_layout": problem is None and all(
            tuple(params[name][index].shape) == canonical[name][index] for name in arch.LAYER_NAMES for index in (0, 1)
        ),
        "problem": problem,
    }


def _ordered(params):
    known = [name for name in arch.LAYER_NAMES if name in params]
    return known + sorted(set(params) - set(known))


def _describe_layer(name, pair):
    def array_facts(array):
        return {"shape": list(getattr(array, "shape", ())), "dtype": str(getattr(array, "dtype", type(array).__name__))}

    return {"name": name, "weights": array_facts(pair[0]), "biases": array_facts(pair[1])}


def convert(source, destination, class_names=None, renames=None, force=False):
    """Read `source` (.npy, .npz or .caffemodel), check it, and write it as `.npz` at `destination`.

    `class_names` (a list, or a text file's path: one per line) are stored with the weights;
    otherwise names already in the source are kept. `renames` ({layer name in a .caffemodel:
    alexft's name}) maps layers a fine-tuned Caffe model stored under other names. An existing
    `destination` is replaced only with `force` (it may be the only copy of fine-tuned
    weights). Returns the written WeightSet.
    """
    check_destination_name(destination, source)
    source, destination = Path(source), Path(destination)
    if destination.exists() and destination.resolve() == source.resolve():
        raise WeightsError(f"{destination}: is the source itself; choose another output")
    if destination.exists():  # --force replaces weights, never a photo or a feature file named by mistake
        _refuse_unless_weights(destination, "--force")  # (said at once, not "pass --force" first)
        if not force:
            raise WeightsError(f"{destination}: already holds weights; pass --force to replace them")
    elif destination.is_symlink() and not force:  # a link to nothing: nothing to lose, but not replaced unasked
        raise WeightsError(f"{destination}: already exists; pass --force to replace it")
    check_writable(destination, WeightsError)  # before reading a .caffemodel for seconds
    names_file = Path(class_names) if isinstance(class_names, (str, os.PathLike)) else None
    if names_file is not None:
        class_names = read_class_names(names_file)
    weight_set = _load_renamed(source, renames) if renames else weights_io.load(source)
    if class_names is not None:
        if len(class_names) != weight_set.num_classes:
            raise WeightsError(_names_miscounted(class_names, names_file, weight_set.num_classes, source))
        warn_of_repeats(class_names, f"{destination}: ")
        weight_set.class_names = list(class_names)
    try:  # as fetch and features do: a folder named for the output is made
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(f"{destination}: its folder cannot be made ({error.strerror or error})") from None
    weights_io.save(weight_set, destination)
    weight_set.path = destination
    return weight_set


def _load_renamed(source, renames):
    if weights_io.read_format(source) != "caffemodel":
        raise WeightsError(f"{source}: --rename applies to .caffemodel files (layer names of other formats are alexft's)")
    unknown = sorted(set(renames.values()) - set(arch.LAYER_NAMES))
    if unknown:
        raise WeightsError(f"--rename to {', '.join(unknown)}: AlexNet's layers are {', '.join(arch.LAYER_NAMES)}")
    params = caffe.read_caffemodel(source, renames)
    weights_io.check(params, source)
    return weights_io.WeightSet(params, None, source)


def save_weights(weight_set, path, overwrite=True):
    """Write `weight_set` (a WeightSet) as the pickle-free `.npz` layout at `path`, atomically.
    As Keras' `save_weights`, an existing file is replaced unless `overwrite=False`; but only a
    weights file is: a photo, a feature file or anything else named by mistake is refused, as
    is a name that does not end in .npz (the file would be an .npz under another name).
    Returns the path written."""
    from .formats import WeightSet

    if not isinstance(weight_set, WeightSet):
        raise TypeError(f"save_weights takes a WeightSet (alexft.load_weights(path), or alexft.weights_from_model(model) "
                        f"for a Keras model), not {type(weight_set).__name__}")
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder; name a file")
    if path.suffix.lower() != ".npz":
        raise WeightsError(f"{path}: weights are saved as .npz; name the file so (e.g. {path.stem}.npz)")
    if path.exists():
        if not overwrite:
            raise WeightsError(f"{path}: already exists; pass overwrite=True to replace it")
        _refuse_unless_weights(path, "overwrite=True")
    check_writable(path, WeightsError)
    weights_io.save(weight_set, path)
    return path


def _refuse_unless_weights(path, forced_by):
    names = archive_names(path, WeightsError)
    if not any(name.endswith("/weights.npy") for name in names):
        raise WeightsError(f"{path}: exists and is not a weights file ({what_it_holds(path, names)}), so it is not "
                           f"replaced, even with {forced_by}; name another output, or remove it first if it should go")


def check_destination_name(destination, source=None):
    """An output that is no .npz name is refused, a folder (one typed `out/` too, not made yet)
    with a name inside it; the names suggested are the source's (`source`, when known)."""
    stem = Path(source).stem if source is not None else "bvlc_alexnet"
    refuse_folder_for_file(destination, "the converted file is one .npz", f"{stem}.npz", WeightsError)
    destination = Path(destination)
    if destination.suffix.lower() != ".npz":
        own = stem if destination.stem.startswith(".") else destination.stem  # (`.npz` alone: a hidden file)
        raise WeightsError(f"{destination}: the converted file must be an .npz (e.g. {destination.with_name(f'{own}.npz')})")


def parse_renames(pairs):
    """{old: new} from `--rename NAME=LAYER` values (a .caffemodel's layer name, alexft's)."""
    renames = {}
    for pair in pairs:
        old, equals, new = pair.partition("=")
        if not (equals and old.strip() and new.strip()):
            raise WeightsError(f"--rename {pair!r}: expected NAME=LAYER, e.g. fc8_flickr=fc8")
        renames[old.strip()] = new.strip()
    return renames


def read_class_names(path):
    """One class name per line (blank lines ignored), like imagenet_classes.txt."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # (a Windows editor's byte-order mark)
    except (OSError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path}: cannot read class names: {error}") from None
    return [line.strip() for line in lines if line.strip()]


def _names_miscounted(class_names, names_file, outputs, source):
    said = f"{len(class_names)} class names given for {outputs} fc8 outputs in {source}"
    if names_file is None:
        return said
    lines = names_file.read_text(encoding="utf-8-sig").splitlines()
    last = max((number for number, line in enumerate(lines, 1) if line.strip()), default=0)
    blank = [str(number) for number, line in enumerate(lines[:last], 1) if not line.strip()]
    skipped = (f"; blank line{'s' if len(blank) > 1 else ''} {', '.join(blank[:5])}{', ...' if len(blank) > 5 else ''} "
               "skipped (one name per line)") if blank else ""
    return f"{names_file}: {said}{skipped}"


def warn_of_repeats(class_names, where=""):
    """Results by name (decode_predictions, evaluate's folders, which refuse such a name) cannot
    tell repeated names apart. A warning, not a refusal: ImageNet's own list names two classes
    "crane" (the bird and the machine)."""
    repeated = sorted(name for name, count in collections.Counter(class_names).items() if count > 1)
    if repeated:
        warn_user(f"{where}class names given more than once: {', '.join(map(repr, repeated))}; results by name cannot "
                  "tell those classes apart")
