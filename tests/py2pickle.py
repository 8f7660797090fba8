"""Write `.npy` files exactly as Python 2's numpy wrote bvlc_alexnet.npy.

Python 3's pickler cannot produce a Python-2 stream (it writes bytes through `_codecs`), so
the opcodes are emitted by hand, in the form numpy 1.x under Python 2 used (compare
numpy/lib/tests/data/py2-objarr.npy): arrays as `_reconstruct` + BUILD with the raw data
as a byte string, dtypes as `dtype('f4', 0, 1)` + BUILD, dict keys as byte strings.
"""
import struct

import numpy as np

PROTO, STOP, MARK, BUILD, REDUCE = b"\x80\x02", b".", b"(", b"b", b"R"
TUPLE, TUPLE1, TUPLE2, TUPLE3, EMPTY_TUPLE = b"t", b"\x85", b"\x86", b"\x87", b")"
EMPTY_DICT, SETITEMS, EMPTY_LIST, APPENDS = b"}", b"u", b"]", b"e"
NONE, NEWFALSE = b"N", b"\x89"


class Py2Pickler:
    def __init__(self):
        self.out = bytearray(PROTO)
        self.memo = 0

    def put(self):
        self.memo += 1
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)

    def global_(self, module, name):
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.put()

    def int_(self, value):
        self.out += b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)

    def string(self, data):
        """A Python 2 `str` (bytes)."""
        data = data.encode("latin1") if isinstance(data, str) else data
        if len(data) < 256:
            self.out += b"U" + bytes([len(data)]) + data
        else:
            self.out += b"T" + struct.pack("<I", len(data)) + data
        self.put()

    def tuple_(self, items, write):
        opcodes = {0: EMPTY_TUPLE, 1: TUPLE1, 2: TUPLE2, 3: TUPLE3}
        if len(items) not in opcodes:
            self.out += MARK
        for item in items:
            write(item)
        self.out += opcodes.get(len(items), TUPLE)

    def dtype(self, code, byteorder, flags):
        self.global_("numpy", "dtype")
        self.string(code)
        self.int_(0)
        self.int_(1)
        self.out += TUPLE3 + REDUCE
        self.put()
        self.out += MARK
        self.int_(3)
        self.string(byteorder)
        self.out += NONE + NONE + NONE
        self.int_(-1)
        self.int_(-1)
        self.int_(flags)
        self.out += TUPLE + BUILD

    def array_header(self):
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.int_(0)
        self.out += TUPLE1
        self.string("b")
        self.out += TUPLE3 + REDUCE
        self.put()

    def float32_array(self, array):
        array = np.ascontiguousarray(array, dtype="<f4")
        self.array_header()
        self.out += MARK
        self.int_(1)
        self.tuple_(array.shape, self.int_)
        self.dtype("f4", "<", 0)
        self.out += NEWFALSE
        self.string(array.tobytes())
        self.out += TUPLE + BUILD

    def layer_dict(self, params):
        self.out += EMPTY_DICT
        self.put()
        self.out += MARK
        for name, (weights, biases) in params.items():
            self.string(name)
            self.out += EMPTY_LIST
            self.put()
            self.out += MARK
            self.float32_array(weights)
            self.float32_array(biases)
            self.out += APPENDS
        self.out += SETITEMS

    def object_scalar(self, write_item):
        """np.save's 0-d object array around one object."""
        self.array_header()
        self.out += MARK
        self.int_(1)
        self.out += EMPTY_TUPLE
        self.dtype("O8", "|", 63)
        self.out += NEWFALSE + EMPTY_LIST
        self.put()
        self.out += MARK
        write_item()
        self.out += APPENDS + TUPLE + BUILD + STOP


def npy_header(descr="|O", shape="()"):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header += " " * (-(len(header) + 11) % 16) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")


def python2_npy_bytes(params):
    """The bytes of `np.save(path, params)` as run under Python 2, for a {layer: [W, b]} dict."""
    pickler = Py2Pickler()
    pickler.object_scalar(lambda: pickler.layer_dict(params))
    return npy_header() + bytes(pickler.out)


def write_python2_npy(path, params):
    with open(path, "wb") as handle:
        handle.write(python2_npy_bytes(params))
    return path
