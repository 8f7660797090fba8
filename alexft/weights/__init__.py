"""AlexNet's weights: the files and where they come from.

- `formats`: read any supported file (bvlc_alexnet.npy's pickle, alexft's .npz, Caffe's
  .caffemodel), check it against AlexNet, assign it to a model, save .npz; its names are
  this package's (`alexft.weights.load`, ...);
- `caffe`: Caffe's protobuf wire format (.caffemodel, .binaryproto), read without Caffe;
- `files`: opening a file for any reader;
- `download`: a resumable, verified download;
- `sources`: where the weights come from when no file is named, and what a file's hash says
  of its origin;
- `tools`: what `alexft weights info` and `weights convert` do.

Imports only go down that list's dependencies (files <- caffe <- formats <- download, tools
<- sources): no circle.
"""
from .formats import (FORMATS, NPY_MAGIC, ZIP_MAGIC, WeightSet, as_weight_set, assign, check, class_names_for,
                      default_class_names, from_model, imagenet_class_names, layers_above, load, read, read_format, save)
from .files import open_weights_file

__all__ = ["FORMATS", "NPY_MAGIC", "ZIP_MAGIC", "WeightSet", "as_weight_set", "assign", "check", "class_names_for",
           "default_class_names", "from_model", "imagenet_class_names", "layers_above", "load", "open_weights_file", "read",
           "read_format", "save"]
