"""3x3, stride-1, 'same' convolutions as Winograd F(4x4, 3x3), for training on a CPU.

Each 6x6 input tile gives a 4x4 output tile with 36 multiplies per channel pair instead of
144: conv3-conv5 (13x13 outputs, four tiles a side) take 2.6x fewer multiply-adds. The
multiplies are 36 batched matmuls (TensorFlow's, so oneDNN's); the tile transforms around them
are XLA-compiled, each one pass over memory, with hand-written gradients (autodiff through
them is 2x slower than the direct convolution). Forward and both backward passes together,
at batch 64 on a 2-core AVX2 CPU: conv3 1.7x, conv4 and conv5 1.4-1.5x faster than oneDNN's
direct passes; a whole training step 12-19% faster (+6% on 2026-12-02: docs/benchmarks.md). On an AVX-512 CPU (AMD Zen 5), where
oneDNN's direct passes ran 2.4-2.8x faster, it gained nothing (docs/benchmarks.md): hence
`helps_on`. XLA compiles the transforms once per batch shape, ~7 s: hence `pays_off`.

The price is float32 round-off: outputs and gradients within ~1e-5 of the exact values,
relative to their largest value (the direct convolution: ~4e-7). Training tolerates that;
inference keeps the direct convolution, which matches Caffe. Matrices from Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks" (2015), F(4x4, 3x3).
"""
import numpy as np
import tensorflow as tf

TILE, OUT = 6, 4  # input tile side, output tile side

_BT = np.array([
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
], np.float32)
_G = np.array([
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
], np.float32)
_AT = np.array([
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
], np.float32)


# XLA compiles the tile transforms once per batch shape, ~7 s on a 2-core CPU (a run usually
# has two shapes: its batches and a shorter last one), against ~0.35 s saved per step of 64
# images: a run gains from ~2700 images on, so it pays off from about twice that.
MIN_TRAINING_IMAGES = 5000


def pays_off(training_images, features):
    """Whether a training run through this many images (images x epochs), on a CPU with these
    instruction sets (`cpu_features()`), should use Winograd."""
    return helps_on(features) and training_images >= MIN_TRAINING_IMAGES


def helps_on(features):
    """Whether Winograd beats oneDNN's direct convolutions on a CPU with these instruction sets.
    Measured at batch 64, forward and backward: 1.4-1.7x per layer on an AVX2+FMA CPU without
    AVX-512 (AMD EPYC, family 25); 0.87-1.0x with AVX-512 (AMD EPYC Zen 5). Unmeasured on other
    CPUs (Arm among them), which keep the direct convolutions."""
    return {"AVX2", "FMA3"} <= features and "AVX512F" not in features


def cpu_features():
    """The instruction sets numpy detected on this CPU at start-up, as names ('AVX2', 'AVX512F',
    ...); empty when this numpy does not say."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:  # numpy 1.x
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return frozenset()
    return frozenset(name for name, present in __cpu_features__.items() if present)


def applies(kernel, stride, padding, dtype):
    """Whether a convolution of this form can run here: 3x3, stride 1, 'same', float32 (the
    transforms' round-off grows too much in 16-bit floats)."""
    return kernel == 3 and stride == 1 and padding == "same" and tf.as_dtype(dtype) == tf.float32


def conv3x3(inputs, kernel, groups=1):
    """`tf.nn.conv2d(inputs, kernel, 1, "SAME")` with `groups` groups (kernel (3, 3, in / groups,
    out), as the weights file holds it), differentiable in both arguments. Groups run one after
    the other: in one set of kernels, their layout changes cost more than they save."""
    if groups == 1:
        return _ungrouped(inputs, kernel)
    pairs = zip(tf.split(inputs, groups, axis=-1), tf.split(kernel, groups, axis=-1))
    return tf.concat([_ungrouped(x, k) for x, k in pairs], axis=-1)


def _ungrouped(inputs, kernel):
    batch, height, width = tf.shape(inputs)[0], inputs.shape[1], inputs.shape[2]

    @tf.custom_gradient
    def convolve(inputs, filter_tiles):
        input_tiles = _input_tiles(inputs)
        outputs = _output_tiles(tf.matmul(input_tiles, filter_tiles), batch, height, width)

        def gradient(grad):
            product_grad = _output_tiles_gradient(grad)
            inputs_grad = _input_tiles_gradient(
                tf.matmul(product_grad, filter_tiles, transpose_b=True), batch, height, width)
            return inputs_grad, tf.matmul(input_tiles, product_grad, transpose_a=True)

        return outputs, gradient

    return convolve(inputs, _filter_tiles(kernel))


def _combine(matrix, parts):
    """[sum_i matrix[r, i] * parts[i] for each row r], writing out only the non-zero terms so
    that XLA fuses the lot into one loop."""
    rows = []
    for coefficients in matrix:
        total = None
        for coefficient, part in zip(coefficients.tolist(), parts):
            if coefficient == 0:
                continue
            term = part if coefficient == 1 else -part if coefficient == -1 else part * coefficient
            total = term if total is None else total + term
        rows.append(total)
    return rows


def _tiles_a_side(size):
    return -(-size // OUT)


def _to_matmul_layout(tiles):
    """36 tensors (n, th, tw, c) -> (36, n * th * tw, c): one matrix per tile element."""
    return tf.reshape(tf.stack(tiles, 0), [TILE * TILE, -1, tiles[0].shape[-1]])


def _from_matmul_layout(matrices, batch, th, tw):
    """(36, n * th * tw, c) -> (6, 6, n, th, tw, c), the inverse of `_to_matmul_layout`."""
    return tf.reshape(matrices, [TILE, TILE, batch, th, tw, matrices.shape[-1]])


@tf.function(jit_compile=True)
def _input_tiles(x):
    """B^T d B of every overlapping 6x6 tile (stride 4) of x, zero-padded by one on top and left."""
    height, width = x.shape[1], x.shape[2]
    th, tw = _tiles_a_side(height), _tiles_a_side(width)
    padded = tf.pad(x, [[0, 0], [1, OUT * th + 1 - height], [1, OUT * tw + 1 - width], [0, 0]])
    rows = [padded[:, i:i + OUT * (th - 1) + 1:OUT] for i in range(TILE)]
    tiles = []
    for row in _combine(_BT, rows):
        tiles += _combine(_BT, [row[:, :, j:j + OUT * (tw - 1) + 1:OUT] for j in range(TILE)])
    return _to_matmul_layout(tiles)


@tf.function(jit_compile=True)
def _output_tiles(products, batch, height, width):
    """A^T m A of every tile, laid side by side and cropped to height x width."""
    th, tw = _tiles_a_side(height), _tiles_a_side(width)
    m = _from_matmul_layout(products, batch, th, tw)
    rows = _combine(_AT, [m[a] for a in range(TILE)])  # 4 of (6, n, th, tw, c)
    tiles = tf.stack([tf.stack(_combine(_AT, [row[b] for b in range(TILE)]), 3) for row in rows], 2)
    outputs = tf.reshape(tiles, [batch, OUT * th, OUT * tw, tiles.shape[-1]])  # tiles: (n, th, 4, tw, 4, c)
    return outputs[:, :height, :width]


@tf.function(jit_compile=True)
def _output_tiles_gradient(grad):
    """The adjoint of `_output_tiles`: A g A^T of every 4x4 tile of the (zero-padded) gradient."""
    batch, height, width, channels = tf.shape(grad)[0], grad.shape[1], grad.shape[2], grad.shape[3]
    th, tw = _tiles_a_side(height), _tiles_a_side(width)
    padded = tf.pad(grad, [[0, 0], [0, OUT * th - height], [0, OUT * tw - width], [0, 0]])
    tiled = tf.reshape(padded, [batch, th, OUT, tw, OUT, channels])
    rows = _combine(_AT.T, [tiled[:, :, p] for p in range(OUT)])
    tiles = []
    for row in rows:
        tiles += _combine(_AT.T, [row[:, :, :, q] for q in range(OUT)])
    return _to_matmul_layout(tiles)


@tf.function(jit_compile=True)
def _input_tiles_gradient(grad, batch, height, width):
    """The adjoint of `_input_tiles`: B g B^T of every tile, overlap-added back into place.

    Tile (ty, tx)'s element (i, j) lands on padded row 4 ty + i, column 4 tx + j; it is summed
    into the grid of row phase i % 4 and column phase j % 4, shifted by one tile when i >= 4 or
    j >= 4 (where it overlaps the next tile), and the 16 phase grids interleave into the image.
    """
    th, tw = _tiles_a_side(height), _tiles_a_side(width)
    g = _from_matmul_layout(grad, batch, th, tw)
    rows = _combine(_BT.T, [g[a] for a in range(TILE)])
    tiles = [_combine(_BT.T, [row[b] for b in range(TILE)]) for row in rows]  # tiles[i][j]: (n, th, tw, c)
    phases = [[None] * OUT for _ in range(OUT)]
    for i in range(TILE):
        for j in range(TILE):
            shifted = tf.pad(tiles[i][j], [[0, 0], [i // OUT, 1 - i // OUT], [j // OUT, 1 - j // OUT], [0, 0]])
            cell = phases[i % OUT][j % OUT]
            phases[i % OUT][j % OUT] = shifted if cell is None else cell + shifted
    grid = tf.stack([tf.stack(row, 3) for row in phases], 2)  # (n, th + 1, 4, tw + 1, 4, c)
    grid = tf.reshape(grid, [batch, OUT * (th + 1), OUT * (tw + 1), grid.shape[-1]])
    return grid[:, 1:1 + height, 1:1 + width]


def _filter_tiles(kernel):
    """G g G^T of the kernel: (3, 3, c, k) -> (36, c, k)."""
    u = tf.einsum("ai,ijck,bj->abck", _G, kernel, _G)
    return tf.reshape(u, [TILE * TILE, kernel.shape[2], kernel.shape[3]])
