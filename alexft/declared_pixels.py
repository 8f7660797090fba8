"""The pixel count an encoded image declares in its header, in TensorFlow ops: what the exported
model's serving function checks before decoding, as `preprocess.decode_image` checks it in
Python. A 400 KB PNG declaring 20000x20000 pixels had taken 8 GB and 15 s of a server.

Formats are those `tf.io.decode_image` reads; offsets from their specifications (PNG's IHDR,
GIF's frames, BMP's DIB header, WebP's VP8/VP8L/VP8X headers). Anything else counts as 0:
its decoder refuses it anyway.
"""
import tensorflow as tf

_PADDING = tf.constant(b"\0" * 32)  # a short file reads as zeros, never out of range


def _number(padded, offset, count, big_endian=False):
    data = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, offset, count), tf.uint8), tf.int64)
    # The byte order is fixed here, not by slicing a constant: grappler's layout pass fails on a
    # reversing slice of one and logs an error line on every server's first call.
    powers = [256 ** i for i in range(count)]
    weights = tf.constant(powers[::-1] if big_endian else powers, tf.int64)
    return tf.reduce_sum(data * weights)


def _signed32(value):
    return tf.where(value >= 2 ** 31, value - 2 ** 32, value)


def _bmp(padded):
    core = tf.equal(_number(padded, 14, 4), 12)  # the old OS/2 header: 16-bit sizes
    width = tf.where(core, _number(padded, 18, 2), tf.abs(_signed32(_number(padded, 18, 4))))
    height = tf.where(core, _number(padded, 20, 2), tf.abs(_signed32(_number(padded, 22, 4))))  # < 0: top-down rows
    return width * height


def _webp(padded):
    chunk = tf.strings.substr(padded, 12, 4)
    extended = (_number(padded, 24, 3) + 1) * (_number(padded, 27, 3) + 1)
    bits = _number(padded, 21, 4)
    lossless = (bits % 2 ** 14 + 1) * (bits // 2 ** 14 % 2 ** 14 + 1)
    lossy = (_number(padded, 26, 2) % 2 ** 14) * (_number(padded, 28, 2) % 2 ** 14)
    return tf.where(tf.equal(chunk, "VP8X"), extended, tf.where(tf.equal(chunk, "VP8L"), lossless, lossy))


def _gif(data, padded):
    """Frames x the largest frame's extent, as TensorFlow's GIF decoder allocates them all: the
    screen size alone would pass a 1x1 screen holding a 20000x20000 frame. The blocks are walked
    (extensions and frames, each a chain of sub-blocks of at most 255 bytes)."""
    size = tf.cast(tf.strings.length(data), tf.int64)

    def byte(position):
        return _number(padded, position, 1)

    def after_sub_blocks(position):  # past a chain of sub-blocks and its terminating 0
        end = tf.while_loop(lambda at: tf.logical_and(at < size, byte(at) > 0), lambda at: [at + byte(at) + 1],
                            [position])[0]
        return end + 1

    def table(flags):  # a colour table's bytes, when its flag is set
        return tf.where(flags >= 128, 3 * 2 ** (flags % 8 + 1), tf.constant(0, tf.int64))

    def block(position, width, height, frames):
        kind = byte(position)

        def frame():
            right = _number(padded, position + 1, 2) + _number(padded, position + 5, 2)
            bottom = _number(padded, position + 3, 2) + _number(padded, position + 7, 2)
            start = position + 10 + table(byte(position + 9)) + 1  # the table, then LZW's code size
            return after_sub_blocks(start), tf.maximum(width, right), tf.maximum(height, bottom), frames + 1

        def extension():
            return after_sub_blocks(position + 2), width, height, frames

        return tf.cond(tf.equal(kind, 0x2C), frame, extension)

    def more(position, width, height, frames):
        return tf.logical_and(position < size, tf.logical_or(tf.equal(byte(position), 0x21), tf.equal(byte(position), 0x2C)))

    screen = (_number(padded, 6, 2), _number(padded, 8, 2))
    _, width, height, frames = tf.while_loop(more, block, [13 + table(byte(10)), *screen, tf.constant(0, tf.int64)])
    return tf.maximum(frames, 1) * width * height


def declared_pixels(data):
    """Width x height as `data` (a scalar string tensor) declares them, int64."""
    padded = tf.strings.join([data, _PADDING])
    start = tf.strings.substr(padded, 0, 4)
    png = _number(padded, 16, 4, big_endian=True) * _number(padded, 20, 4, big_endian=True)
    webp = tf.logical_and(tf.equal(start, "RIFF"), tf.equal(tf.strings.substr(padded, 8, 4), "WEBP"))
    other = tf.where(tf.equal(start, b"\x89PNG"), png,
                     tf.where(tf.equal(tf.strings.substr(padded, 0, 2), "BM"), _bmp(padded),
                              tf.where(webp, _webp(padded), tf.constant(0, tf.int64))))
    is_gif = tf.equal(tf.strings.substr(padded, 0, 3), "GIF")
    return tf.cond(tf.io.is_jpeg(data), lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)),
                   lambda: tf.cond(is_gif, lambda: _gif(data, padded), lambda: other))
