"""CaffeSGD against Caffe's SGDSolver update, written out in numpy."""
import numpy as np
import pytest
import tensorflow as tf

from alexft.sgd import CaffeSGD

LR, MOMENTUM = 0.01, 0.9
# (shape, lr_mult, decay): a kernel, a fresh layer's kernel (10x), a bias (2x, no decay)
SPECS = [((5, 3), 1.0, 5e-4), ((4,), 10.0, 5e-4), ((3,), 2.0, 0.0)]


def caffe_sgd(weights, gradients_per_step, momentum=MOMENTUM):
    """Caffe: history = momentum * history - lr * lr_mult * (gradient + decay * w); w += history."""
    weights = [w.astype(np.float64) for w in weights]
    history = [np.zeros_like(w) for w in weights]
    for gradients in gradients_per_step:
        for i, ((_, mult, decay), g) in enumerate(zip(SPECS, gradients)):
            history[i] = momentum * history[i] - LR * mult * (g + decay * weights[i])
            weights[i] = weights[i] + history[i]
    return weights


def random_problem(steps, replicas=1, seed=0):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(shape).astype(np.float32) * 3 for shape, _, _ in SPECS]
    gradients = [[[rng.standard_normal(shape).astype(np.float32) for shape, _, _ in SPECS] for _ in range(replicas)]
                 for _ in range(steps)]
    return weights, gradients


def optimizer_for(variables, momentum=MOMENTUM):
    optimizer = CaffeSGD(LR, momentum, multipliers=[m for _, m, _ in SPECS], decays=[d for _, _, d in SPECS])
    optimizer.build(variables)
    return optimizer


@pytest.mark.parametrize("momentum", [MOMENTUM, 0.0])
def test_updates_follow_caffes_rule(momentum):
    initial, gradients = random_problem(steps=3)
    variables = [tf.Variable(w) for w in initial]
    optimizer = optimizer_for(variables, momentum)
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)))
    for (per_replica,) in gradients:
        step([tf.constant(g) for g in per_replica])
    expected = caffe_sgd(initial, [g for (g,) in gradients], momentum)
    for variable, want, start in zip(variables, expected, initial):
        assert not np.allclose(variable.numpy(), start)
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, atol=1e-6)


def test_under_a_mirrored_strategy_the_replicas_gradients_are_summed_once():
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")[:2]])
    assert strategy.num_replicas_in_sync == 2
    initial, gradients = random_problem(steps=2, replicas=2)
    with strategy.scope():
        variables = [tf.Variable(w) for w in initial]
        optimizer = optimizer_for(variables)

    @tf.function
    def step(per_replica):
        def replica_step():
            index = tf.distribute.get_replica_context().replica_id_in_sync_group
            optimizer.apply_gradients(zip([tf.gather(g, index) for g in per_replica], variables))
        strategy.run(replica_step)

    for per_replica in gradients:
        step([tf.constant(np.stack(g)) for g in zip(*per_replica)])
    expected = caffe_sgd(initial, [[sum(g) for g in zip(*per_replica)] for per_replica in gradients])
    for variable, want in zip(variables, expected):
        for replica_value in strategy.experimental_local_results(variable):
            np.testing.assert_allclose(replica_value.numpy(), want, rtol=1e-5, atol=1e-6)


def test_multipliers_and_decays_must_match():
    with pytest.raises(ValueError, match="2 multipliers for 1 decays"):
        CaffeSGD(LR, MOMENTUM, multipliers=[1.0, 2.0], decays=[5e-4])
