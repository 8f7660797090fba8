"""ImageNet's 1000 classes (ILSVRC-2012) in Caffe's order: names and WordNet ids. No TensorFlow."""
import functools
from pathlib import Path


def _lines(name):
    text = (Path(__file__).parent / name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@functools.lru_cache(maxsize=None)
def _names():
    return _lines("imagenet_classes.txt")


@functools.lru_cache(maxsize=None)
def _ids():
    return _lines("imagenet_synsets.txt")


def class_names():
    """The 1000 class names, e.g. "tabby, tabby cat" (index 281)."""
    return list(_names())


def wordnet_ids():
    """The 1000 WordNet ids in the same order, e.g. "n02123045" (index 281): the ImageNet
    training set's folder names."""
    return list(_ids())
