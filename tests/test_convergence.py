"""The convergence matrix's fast subset (issue #22): fc8 fine-tuning with the library's default
options on scikit-learn digits, from base weights at the three fc7 feature scales of
benchmarks/convergence.py (the generated weights, the same with fc7 40 times larger, 20 times
smaller). The helpers are the benchmark's own, so the two measure the same thing.

Each scale asserts the matrix's hard targets: a history without NaN or infinity and a model.npz
that loads; and that the run learned: its last epoch's training loss below its first's (a loss
running away, as with Caffe's fixed rate at x40, fails this however validation accuracy
jumps), and a last-epoch validation accuracy within MAX_GAP of a logistic-regression probe on
the same frozen fc7 features (the benchmark's full matrix holds it to 5 points on 300 validation
images; 100 here make a point of accuracy one image).
"""
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import convergence as matrix  # noqa: E402

# Every image costs ten forward passes (the feature cache takes Caffe's ten views of train and
# val images alike) at ~40-80 views/s on a 2-core CPU: 100 + 100 images keep a scale at 40-60 s.
TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 10
MAX_GAP = 0.10
SCALES = [Fraction(1), Fraction(40), Fraction(1, 20)]


@pytest.fixture(scope="module")
def digits_split(tmp_path_factory):
    """(train, val) folders of scikit-learn digits: disjoint ranges of one shuffle."""
    return matrix.write_digits_split(tmp_path_factory.mktemp("convergence_digits"), TRAIN_PER_CLASS, VAL_PER_CLASS)


@pytest.fixture(scope="module")
def base(canonical_params, digits_split, tmp_path_factory):
    """factor -> (weights file, {fc7_norm, probe, probe_converged}), each scale built once."""
    folder = tmp_path_factory.mktemp("convergence_weights")
    built = {}

    def at_scale(factor):
        if factor not in built:
            path = folder / f"scale_{factor.numerator}_{factor.denominator}.npz"
            weights = matrix.write_base_weights(canonical_params, factor, path)
            built[factor] = weights, matrix.measure_base(weights, {"digits": digits_split})["digits"]
        return built[factor]

    return at_scale


def test_scaling_multiplies_fc7_and_leaves_the_given_weights_alone(canonical_params):
    fc6_before = canonical_params["fc6"][0][:3, :3].copy()
    scaled = matrix.scaled_params(canonical_params, 40.0)
    assert np.array_equal(canonical_params["fc6"][0][:3, :3], fc6_before)
    assert scaled["conv5"][0] is canonical_params["conv5"][0]  # below fc6: the same arrays
    np.testing.assert_allclose(scaled["fc7"][1], 40 * canonical_params["fc7"][1], rtol=1e-6)


@pytest.mark.parametrize("factor", SCALES, ids=lambda factor: matrix.scale_label(factor))
def test_fc8_fine_tuning_converges_at_any_feature_scale(factor, base, digits_split, tmp_path):
    weights, measured = base(factor)
    # The scale is what it claims: fc7's measured norm per image, against the generated weights'.
    assert measured["fc7_norm"] == pytest.approx(float(factor) * base(Fraction(1))[1]["fc7_norm"], rel=1e-3)
    assert measured["probe_converged"]
    train, val = digits_split
    run = tmp_path / "run"
    cell = matrix.run_cell(train, val, weights, matrix.MODES["fc8"], None, run)  # the library's defaults otherwise

    assert cell["error"] is None
    assert not cell["nonfinite"], (run / "history.csv").read_text()
    assert cell["model"], cell["model_error"]
    described = (f"last epoch: val accuracy {cell['val_last']:.2f} (best {cell['val_best']:.2f}), train loss "
                 f"{cell['train_loss_last']:.3g}; base lr {cell['lr']}; the probe's val accuracy {measured['probe']:.2f} "
                 f"on fc7 features of norm {measured['fc7_norm']:.0f}")
    # It learned and did not run away (the last epoch's loss is below the first's), and the
    # default epochs ("auto": 200 here, 2 steps each) bring it close to the linear probe.
    history = [float(line.split(",")[1]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert cell["train_loss_last"] < history[0], described
    assert len(history) == 200, described
    assert cell["val_last"] >= measured["probe"] - MAX_GAP, described
    matrix.drop_models(run)  # 230 MB each; a failed test keeps them for inspection
