"""alexft: AlexNet with the original Caffe ImageNet weights on TensorFlow 2.

The public API (what the CLI and the notebooks use). Names are imported on first use, so
`import alexft` and the weights tools stay quick and only the model pulls in TensorFlow.
"""
import importlib
import importlib.util
import os
import sys

__version__ = "0.1.0"

# TensorFlow turns on its oneDNN kernels by itself only on CPUs with AVX-512 VNNI, bfloat16 or
# AMX. On AVX2 CPUs they train AlexNet ~40% and infer ~15% faster than its default Eigen ones
# (docs/benchmarks.md). TensorFlow reads this once, at import, so it is set here, before any of
# our modules imports it; a value the user set wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

_EXPORTS = {
    "AlexNet": "applications",
    "preprocess_input": "applications",
    "CaffePreprocessing": "preprocessing_layer",
    "decode_predictions": "applications",
    "imagenet_wordnet_ids": ("imagenet", "wordnet_ids"),
    "AlexftError": "errors",
    "AlexftWarning": "errors",
    "FeatureFileError": "feature_files",
    "ImageError": "errors",
    "WeightsError": "errors",
    "TrainingError": "errors",
    "TrainingInterrupted": "errors",
    "DeviceError": "errors",
    "OptionsError": "train_options",
    "DataError": "data",
    "RunFolderError": "run_folder",
    "ExportError": "export_request",
    "QuantizationError": "quantize",
    "build_alexnet": "model",
    "Kernels": "model",
    "truncated": "model",
    "WeightSet": "weights",
    "load_weights": ("weights", "load"),
    "save_weights": ("weights.tools", "save_weights"),
    "assign_weights": ("weights", "assign"),
    "weights_from_model": ("weights", "from_model"),
    "imagenet_class_names": "weights",
    "resolve_weights": "weights.sources",
    "download_weights": "weights.download",
    "fetch_weights": "weights.in_python",
    "describe_weights": ("weights.tools", "describe"),
    "convert_weights": "weights.in_python",
    "read_caffemodel": "weights.caffe",
    "read_mean_image": "weights.caffe",
    "export_model": "export_request",  # (checks the request, then imports export and TensorFlow)
    "read_image": "preprocess",
    "decode_image": "preprocess",
    "resize_and_subtract_mean": "preprocess",
    "center_crop": "preprocess",
    "ten_crops": "preprocess",
    "image_views": "preprocess",
    "find_images": "preprocess",
    "Predictor": "predict",
    "load_predictor": "predict",
    "predict_files": "predict",
    "classify": "predict",
    "top_k": "predict",
    "finetune": "train",
    "TrainOptions": "train_options",
    "evaluate": "evaluation",
    "labelled_folder": "evaluation",
    "labelled_list": "evaluation",
    "extract_features": "features",
    "images_with_labels": "data",
    "merge_features": "feature_files",
    "import_tensorflow_quietly": "quiet",
    "generated_weights": "demo",
    "weights_or_generated": "demo",
    "sample_photos": "demo",
    "write_digits": "demo",
    "predict_views": "predict",
    "load_litert_predictor": "fast_start",
    "load_dataset": "data",
}

__all__ = sorted(_EXPORTS)


class _FirstImport:
    """An import hook for the first import of the top-level module `name`, which `import alexft`
    must not make itself (seconds of start-up): `wrap(run, module)` runs in place of the import
    (`run(module)`), whoever imports it (alexft's own functions, Keras, the user's code)."""

    def __init__(self, name, wrap):
        self.name, self.wrap, self.searching = name, wrap, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self.searching:
            return None
        self.searching = True  # let the other finders find the module
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            if self in sys.meta_path:  # (a find_spec without an import, e.g. a version check, leaves it)
                sys.meta_path.remove(self)
            before = set(sys.modules)
            try:
                self.wrap(run_module, module)
            except KeyboardInterrupt:
                # (Python drops the interrupted module from sys.modules only after this)
                _refuse_half_imported({name.split(".")[0] for name in set(sys.modules) - before}, unfinished={self.name})
                raise

        spec.loader.exec_module = exec_module
        return spec


class HalfImportedError(ImportError, RuntimeError):
    """A library an interrupted first import left half-imported, asked for again: an ImportError
    where an import asks (the user's `import tensorflow`, a function taken earlier that imports it
    in its call) and a RuntimeError where alexft's attribute does, so either `except` catches it."""


class _HalfImported:
    """An import finder that refuses the libraries an interrupted first import left half-imported:
    importing them again fails on their insides ("Registering two gradient with name
    'AccumulateNV2'", "partially initialized module"), wherever the import comes from (alexft.AlexNet's
    second call, the user's own `import tensorflow`)."""

    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        library = fullname.split(".")[0]
        if library in self.names and fullname not in sys.modules:
            raise HalfImportedError(f"{library}: {_half_imported_said()}")
        return None


def _refuse_half_imported(started, unfinished=()):
    """After a Ctrl-C in an import that started the top-level modules `started`: those of the heavy
    libraries it left unfinished (Python drops an interrupted module) are refused from then on."""
    global _interrupted_import
    names = [name for name in _HEAVY_LIBRARIES if name in started and (name in unfinished or name not in sys.modules)]
    if names:
        _interrupted_import = ", ".join(names)
        sys.meta_path.insert(0, _HalfImported(set(names)))


def _register_layers():
    """Keras finds alexft's layers by their registered names ("alexft>GroupedConv2D"), and
    preprocess_input in a Lambda layer ("alexft>preprocess_input"), when it loads a saved model,
    so they are registered right after Keras is imported."""
    try:
        importlib.import_module(".layers", __name__)
        importlib.import_module(".preprocessing_layer", __name__)
        importlib.import_module(".applications", __name__).register_with_keras()
    except Exception as error:  # never break the user's `import keras`
        import warnings

        warnings.warn(f"alexft could not register its Keras layers: {error}", stacklevel=2)


def _import_keras(run, module):
    run(module)
    _register_layers()


def _import_tensorflow(run, module):
    importlib.import_module(".quiet", __name__).tensorflow_started_quietly(run, module)


if "keras" in sys.modules:
    _register_layers()
else:
    sys.meta_path.insert(0, _FirstImport("keras", _import_keras))
if "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _FirstImport("tensorflow", _import_tensorflow))


_interrupted_import = None  # the libraries an interrupted first use left half-imported
_HEAVY_LIBRARIES = ("numpy", "tensorflow", "keras", "matplotlib")  # broken when their import is stopped midway


def _half_imported_said():
    return (f"an earlier import of {_interrupted_import} in this interpreter was interrupted (Ctrl-C), and such "
            "libraries cannot be imported again in it: restart the interpreter (in a notebook, the kernel)")


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alexft' has no attribute {name!r}")
    if _interrupted_import and _EXPORTS[name] != "errors":  # (the errors stay reachable: an except clause names them)
        raise HalfImportedError(f"alexft.{name}: {_half_imported_said()}")
    module, attribute = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name], name)
    before = set(sys.modules)
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    except KeyboardInterrupt:
        # The first use imports TensorFlow, for seconds. Stopped midway, TensorFlow (and Keras,
        # matplotlib) stay half-imported, and every later use fails with errors about their
        # insides (an AttributeError, "already registered"): said plainly from then on.
        _refuse_half_imported({module.split(".")[0] for module in set(sys.modules) - before})
        raise
    globals()[name] = value
    return value


def __dir__():
    return __all__
