"""Label-noise transition matrices and corruption: formulas, realised rates, seeding, errors."""
import numpy as np
import pytest

from gdw_tf.data.protocol import (ProtocolConfig, corrupt_labels, empirical_transition, flip_targets,
                                  realised_noise, transition_matrix)

C = 10
N = 200_000


def big_labels(num_classes=C, n=N):
    return np.random.default_rng(123).integers(0, num_classes, n)


def within(observed, expected, n, sigmas=5):
    return abs(observed - expected) <= sigmas * np.sqrt(expected * (1 - expected) / n) + 1e-12


def test_uniform_matrix_formula():
    t = transition_matrix(ProtocolConfig("uniform", 0.4, seed=0), C)
    np.testing.assert_allclose(t, 0.4 / C * np.ones((C, C)) + 0.6 * np.eye(C))
    np.testing.assert_allclose(t.sum(axis=1), 1.0)


def test_flip_matrix_one_off_diagonal_class_per_row():
    t = transition_matrix(ProtocolConfig("flip", 0.4, seed=3), C)
    np.testing.assert_allclose(np.diag(t), 0.6)
    off = t - np.diag(np.diag(t))
    assert ((off > 0).sum(axis=1) == 1).all()
    np.testing.assert_allclose(off.sum(axis=1), 0.4)
    assert (flip_targets(t) != np.arange(C)).all()


def test_flip_targets_fixed_per_seed_and_vary_across_seeds():
    a = flip_targets(transition_matrix(ProtocolConfig("flip", 0.4, seed=7), C))
    np.testing.assert_array_equal(a, flip_targets(transition_matrix(ProtocolConfig("flip", 0.2, seed=7), C)))
    others = [flip_targets(transition_matrix(ProtocolConfig("flip", 0.4, seed=s), C)) for s in range(8, 12)]
    assert any(not np.array_equal(a, o) for o in others)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
def test_uniform_realised_rate_is_r_times_one_minus_one_over_c(rate):
    labels = big_labels()
    noisy = corrupt_labels(labels, transition_matrix(ProtocolConfig("uniform", rate), C), seed=0)
    overall, per_class = realised_noise(noisy, labels, C)
    expected = rate * (1 - 1 / C)
    assert within(overall, expected, N)
    assert all(within(r, expected, N // C) for r in per_class)
    np.testing.assert_allclose(empirical_transition(noisy, labels, C),
                               transition_matrix(ProtocolConfig("uniform", rate), C), atol=0.01)


def test_flip_realised_rate_is_r_and_goes_to_the_target_only():
    labels = big_labels()
    t = transition_matrix(ProtocolConfig("flip", 0.4, seed=1), C)
    noisy = corrupt_labels(labels, t, seed=1)
    overall, per_class = realised_noise(noisy, labels, C)
    assert within(overall, 0.4, N)
    assert all(within(r, 0.4, N // C) for r in per_class)
    changed = noisy != labels
    np.testing.assert_array_equal(noisy[changed], flip_targets(t)[labels[changed]])


def test_full_flip_rate_moves_every_label():
    labels = big_labels(n=1000)
    t = transition_matrix(ProtocolConfig("flip", 1.0, seed=2), C)
    np.testing.assert_array_equal(corrupt_labels(labels, t, seed=2), flip_targets(t)[labels])


def test_none_and_zero_rate_leave_labels_unchanged():
    labels = big_labels(n=1000)
    for t in (transition_matrix(ProtocolConfig("none", 0.0), C), transition_matrix(ProtocolConfig("uniform", 0.0), C)):
        np.testing.assert_array_equal(corrupt_labels(labels, t, seed=0), labels)


def test_corruption_is_deterministic_per_seed():
    labels = big_labels(n=5000)
    t = transition_matrix(ProtocolConfig("uniform", 0.5), C)
    a = corrupt_labels(labels, t, seed=11)
    np.testing.assert_array_equal(a, corrupt_labels(labels, t, seed=11))
    assert (a != corrupt_labels(labels, t, seed=12)).any()


def test_golden_values_pin_the_random_streams():
    # Same flags -> same corrupted labels on every machine: pin a few draws.
    t = transition_matrix(ProtocolConfig("flip", 0.4, seed=0), 4)
    labels = corrupt_labels(np.arange(12) % 4, transition_matrix(ProtocolConfig("uniform", 0.8), 4), seed=0)
    assert flip_targets(t).tolist() == GOLDEN_FLIP and labels.tolist() == GOLDEN_UNIFORM


GOLDEN_FLIP = [3, 2, 3, 2]
GOLDEN_UNIFORM = [0, 0, 3, 1, 0, 1, 1, 1, 2, 0, 0, 3]


@pytest.mark.parametrize("noise_type, rate, needle", [
    ("uniform", -0.1, "noise_rate must be in [0, 1], got -0.1"),
    ("uniform", 1.5, "noise_rate must be in [0, 1], got 1.5"),
    ("flip", float("nan"), "noise_rate must be a number in [0, 1], got nan"),
    ("flip", "abc", "noise_rate must be a number in [0, 1], got 'abc'"),
    ("gaussian", 0.2, "unknown noise_type='gaussian'"),
    ("none", 0.3, "noise_rate=0.3 has no effect with noise_type='none'"),
])
def test_bad_noise_parameters_are_named_with_their_value(noise_type, rate, needle):
    with pytest.raises(ValueError) as err:
        ProtocolConfig(noise_type, rate)
    assert needle in str(err.value)


def test_labels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match="labels must lie in"):
        corrupt_labels(np.array([0, 10]), transition_matrix(ProtocolConfig("uniform", 0.1), C), seed=0)
