"""CaffeSGD against Caffe's SGDSolver update, written out in numpy."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from alexft.model import build_alexnet
from alexft.sgd import CaffeSGD, caffe_parameters

MOMENTUM = 0.9
# The rate changes between steps, as the trainer's schedule does: with a fixed rate, Caffe's
# rule (rate inside the history) and PyTorch's (rate outside) would give the same weights.
RATES = [0.01, 0.01, 0.001]
# (shape, lr_mult, decay): a kernel, a fresh layer's kernel (10x), a bias (2x, no decay)
SPECS = [((5, 3), 1.0, 5e-4), ((4,), 10.0, 5e-4), ((3,), 2.0, 0.0)]


def caffe_sgd(weights, gradients_per_step, momentum=MOMENTUM):
    """Caffe: history = momentum * history - rate * lr_mult * (gradient + decay * w); w += history.
    Returns the weights and the histories after every step."""
    weights = [w.astype(np.float64) for w in weights]
    history = [np.zeros_like(w) for w in weights]
    for rate, gradients in zip(RATES, gradients_per_step):
        for i, ((_, mult, decay), g) in enumerate(zip(SPECS, gradients)):
            history[i] = momentum * history[i] - rate * mult * (g + decay * weights[i])
            weights[i] = weights[i] + history[i]
    return weights, history


def random_problem(replicas=1, seed=0):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(shape).astype(np.float32) * 3 for shape, _, _ in SPECS]
    gradients = [[[rng.standard_normal(shape).astype(np.float32) for shape, _, _ in SPECS] for _ in range(replicas)]
                 for _ in RATES]
    return weights, gradients


def caffe_optimizer(momentum=MOMENTUM):
    return CaffeSGD(RATES[0], momentum, multipliers=[m for _, m, _ in SPECS], decays=[d for _, _, d in SPECS])


def run_steps(optimizer, variables, gradients, scale=1.0):
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    for rate, (per_replica,) in zip(RATES, gradients):
        optimizer.learning_rate.assign(rate)
        step([tf.constant(g * scale) for g in per_replica])


@pytest.mark.parametrize("momentum", [MOMENTUM, 0.0])
def test_updates_follow_caffes_rule_as_the_rate_changes(momentum):
    initial, gradients = random_problem()
    variables = [tf.Variable(w) for w in initial]
    optimizer = caffe_optimizer(momentum)
    run_steps(optimizer, variables, gradients)
    expected, history = caffe_sgd(initial, [g for (g,) in gradients], momentum)
    for variable, want, start in zip(variables, expected, initial):
        assert not np.allclose(variable.numpy(), start)
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, atol=1e-7)
    for saved, want in zip(optimizer.momentums, history):  # what a checkpoint stores
        np.testing.assert_allclose(saved.numpy(), want, rtol=1e-5, atol=1e-8)


def pytorch_sgd(weights, gradients_per_step, momentum=MOMENTUM):
    """PyTorch's SGD as its documentation writes it (dampening 0, decay added to the gradient):
    v = momentum * v + (gradient + decay * w); w -= rate * lr_mult * v. The rate multiplies
    the history, so a new rate applies to the whole next step. Returns the weights and the
    velocities after every step."""
    weights = [w.astype(np.float64) for w in weights]
    velocity = [np.zeros_like(w) for w in weights]
    for rate, gradients in zip(RATES, gradients_per_step):
        for i, ((_, mult, decay), g) in enumerate(zip(SPECS, gradients)):
            velocity[i] = momentum * velocity[i] + (g + decay * weights[i])
            weights[i] = weights[i] - rate * mult * velocity[i]
    return weights, velocity


def test_a_rate_change_with_the_momentum_following_is_pytorchs_rule():
    initial, gradients = random_problem(seed=2)
    variables = [tf.Variable(w) for w in initial]
    optimizer = caffe_optimizer()
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    optimizer.change_rate(RATES[0])  # before the first step: there is no history to rescale
    for rate, (per_replica,) in zip(RATES, gradients):
        optimizer.change_rate(rate)
        step([tf.constant(g) for g in per_replica])
    expected, velocity = pytorch_sgd(initial, [g for (g,) in gradients])
    caffes, _ = caffe_sgd(initial, [g for (g,) in gradients])
    for variable, want, caffe in zip(variables, expected, caffes):
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, atol=1e-7)
        assert not np.allclose(variable.numpy(), caffe, rtol=1e-4, atol=1e-5)  # the drop made a difference
    # The stored history is Caffe's form at the current rate, so checkpoints keep their meaning.
    for saved, v, (_, mult, _) in zip(optimizer.momentums, velocity, SPECS):
        np.testing.assert_allclose(saved.numpy(), -RATES[-1] * mult * v, rtol=1e-5, atol=1e-9)


def test_a_higher_rate_leaves_the_momentum_history_as_it_is():
    initial, gradients = random_problem(seed=4)
    variables = [tf.Variable(w) for w in initial]
    optimizer = caffe_optimizer()
    optimizer.apply_gradients(zip([tf.constant(g) for g in gradients[0][0]], variables))
    before = [history.numpy().copy() for history in optimizer.momentums]
    assert any(h.any() for h in before)
    optimizer.change_rate(RATES[0] * 10)  # up: the history builds up over the next steps, as in Caffe
    for history, was in zip(optimizer.momentums, before):
        np.testing.assert_array_equal(history.numpy(), was)
    optimizer.change_rate(RATES[0])  # down: scaled at once by the new rate over the old
    for history, was in zip(optimizer.momentums, before):
        np.testing.assert_allclose(history.numpy(), was * 0.1, rtol=1e-6)


def test_a_rate_change_without_the_momentum_following_keeps_caffes_rule():
    initial, gradients = random_problem(seed=3)
    variables = [tf.Variable(w) for w in initial]
    optimizer = caffe_optimizer()
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    for rate, (per_replica,) in zip(RATES, gradients):
        optimizer.change_rate(rate, momentum_follows=False)
        step([tf.constant(g) for g in per_replica])
    expected, _ = caffe_sgd(initial, [g for (g,) in gradients])
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, atol=1e-7)


def test_loss_scaling_wrapper_unscales_before_caffes_rule():
    initial, gradients = random_problem(seed=1)
    variables = [tf.Variable(w) for w in initial]
    optimizer = keras.optimizers.LossScaleOptimizer(caffe_optimizer())
    optimizer.build(variables)
    scale = float(optimizer.dynamic_scale.numpy())
    assert scale > 1
    run_steps(optimizer, variables, gradients, scale=scale)  # gradients of the scaled loss
    expected, _ = caffe_sgd(initial, [g for (g,) in gradients])
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, atol=1e-7)


def test_under_a_mirrored_strategy_the_replicas_gradients_are_summed_once():
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")[:2]])
    assert strategy.num_replicas_in_sync == 2
    initial, gradients = random_problem(replicas=2)
    with strategy.scope():
        variables = [tf.Variable(w) for w in initial]
        optimizer = caffe_optimizer()
        optimizer.build(variables)  # as Trainer does, in the strategy's scope

    @tf.function
    def step(per_replica):
        def replica_step():
            index = tf.distribute.get_replica_context().replica_id_in_sync_group
            optimizer.apply_gradients(zip([tf.gather(g, index) for g in per_replica], variables))
        strategy.run(replica_step)

    for rate, per_replica in zip(RATES, gradients):
        optimizer.change_rate(rate)  # as Trainer does between epochs, outside the replicas
        step([tf.constant(np.stack(g)) for g in zip(*per_replica)])
    expected, velocity = pytorch_sgd(initial, [[sum(g) for g in zip(*per_replica)] for per_replica in gradients])
    for variable, want in zip(variables, expected):
        for replica_value in strategy.experimental_local_results(variable):
            np.testing.assert_allclose(replica_value.numpy(), want, rtol=1e-6, atol=1e-7)
    for saved, v, (_, mult, _) in zip(optimizer.momentums, velocity, SPECS):
        for replica_value in strategy.experimental_local_results(saved):
            np.testing.assert_allclose(replica_value.numpy(), -RATES[-1] * mult * v, rtol=1e-5, atol=1e-9)


def test_keeps_keras_sgds_variables_so_checkpoints_carry_over():
    initial, _ = random_problem()
    ours, keras_sgd = caffe_optimizer(), keras.optimizers.SGD(RATES[0], MOMENTUM)
    ours.build([tf.Variable(w) for w in initial])
    keras_sgd.build([tf.Variable(w) for w in initial])
    assert [(v.path.split("/")[-1], v.shape) for v in ours.variables] == \
        [(v.path.split("/")[-1], v.shape) for v in keras_sgd.variables]


def test_mismatched_or_foreign_settings_are_refused():
    with pytest.raises(ValueError, match="2 multipliers for 1 decays"):
        CaffeSGD(0.01, MOMENTUM, multipliers=[1.0, 2.0], decays=[5e-4])
    with pytest.raises(ValueError, match="neither nesterov nor weight_decay"):
        CaffeSGD(0.01, MOMENTUM, multipliers=[1.0], decays=[5e-4], nesterov=True)
    with pytest.raises(ValueError, match="2 variables for 1 multipliers"):
        CaffeSGD(0.01, MOMENTUM, multipliers=[1.0], decays=[5e-4]).build([tf.Variable([1.0]), tf.Variable([2.0])])


def test_parameters_get_caffes_fine_tuning_multipliers_and_decays():
    # bvlc_alexnet's fine-tuning prototxt: weights lr_mult 1 decay_mult 1, biases lr_mult 2
    # decay_mult 0; the freshly initialised fc8 at 10 and 20.
    model = build_alexnet(num_classes=10, seed=0)
    variables, multipliers, decays = caffe_parameters(model, ["fc7", "fc8"], skip=["fc8"], weight_decay=5e-4)
    fc7, fc8 = model.get_layer("fc7"), model.get_layer("fc8")
    assert [v.path for v in variables] == [fc7.kernel.path, fc7.bias.path, fc8.kernel.path, fc8.bias.path]
    assert multipliers == [1.0, 2.0, 10.0, 20.0]
    assert decays == [5e-4, 0.0, 5e-4, 0.0]
