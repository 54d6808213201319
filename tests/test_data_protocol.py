"""Meta split, long tail and their combination with noise (the paper's data protocol)."""
import logging

import numpy as np
import pytest

from gdw_tf.data.protocol import (
    ProtocolConfig,
    apply_protocol,
    corrupt_labels,
    long_tail_counts,
    long_tail_subsample,
    realised_noise,
    split_meta,
    transition_matrix,
)

C = 10
CIFAR_LIKE = np.repeat(np.arange(C), 5000)  # 50,000 clean labels, 5,000 per class


def test_long_tail_counts_formula_cifar10():
    img_max = (50000 - 1000) / C
    counts = long_tail_counts(img_max, C, 0.01)
    assert counts == [int(img_max * 0.01 ** (c / (C - 1))) for c in range(C)]
    assert counts[0] == 4900 and counts[-1] == 49
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert long_tail_counts(img_max, C, 1.0) == [4900] * C


def test_long_tail_subsample_keeps_requested_counts_and_reports_shortfall():
    labels = np.repeat(np.arange(3), [5, 10, 10])
    kept, shortfall = long_tail_subsample(labels, [8, 6, 2], seed=0)
    np.testing.assert_array_equal(np.bincount(labels[kept], minlength=3), [5, 6, 2])
    assert shortfall == {0: (8, 5)}
    assert np.all(np.diff(kept) > 0)


def test_split_meta_is_balanced_disjoint_and_complete():
    meta, rest = split_meta(CIFAR_LIKE, C, ProtocolConfig(num_meta=1000))
    np.testing.assert_array_equal(np.bincount(CIFAR_LIKE[meta], minlength=C), [100] * C)
    assert np.intersect1d(meta, rest).size == 0
    np.testing.assert_array_equal(np.union1d(meta, rest), np.arange(CIFAR_LIKE.size))


@pytest.mark.parametrize("num_meta, needle", [
    (1001, "num_meta=1001 is not divisible by the number of classes (10)"),
    (50000, "num_meta=50000 asks 5000 meta examples per class"),
    (-10, "num_meta must be a non-negative integer, got -10"),
    (10.0, "num_meta must be a non-negative integer, got 10.0"),
])
def test_bad_num_meta_names_the_value(num_meta, needle):
    with pytest.raises(ValueError) as err:
        split_meta(CIFAR_LIKE, C, ProtocolConfig(num_meta=num_meta))
    assert needle in str(err.value)


@pytest.mark.parametrize("mu", [0.0, -0.5, 1.5, float("nan"), "x"])
def test_bad_imbalance_factor_names_the_parameter_and_value(mu):
    with pytest.raises(ValueError, match="imbalance_factor must be") as err:
        ProtocolConfig(imbalance_factor=mu)
    assert str(mu) in str(err.value)


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        ProtocolConfig(seed=-1)


def test_combined_protocol_cifar10_long_tail_then_noise():
    cfg = ProtocolConfig("uniform", 0.4, 0.01, 1000, seed=5)
    r = apply_protocol(CIFAR_LIKE, C, cfg)
    # 1. meta: clean (true labels of the source), balanced, disjoint from training
    np.testing.assert_array_equal(np.bincount(CIFAR_LIKE[r.meta_origin], minlength=C), [100] * C)
    assert np.intersect1d(r.meta_origin, r.train_origin).size == 0
    # 2. long tail on the clean labels of the non-meta examples: exact formula counts
    expected = long_tail_counts((50000 - 1000) / C, C, 0.01)
    np.testing.assert_array_equal(np.bincount(r.true_labels, minlength=C), expected)
    np.testing.assert_array_equal(r.true_labels, CIFAR_LIKE[r.train_origin])
    assert r.img_max == 4900 and r.long_tail_targets == expected and not r.shortfall
    # 3. noise on the long-tailed set, at the uniform rate r (1 - 1/C)
    rate, _ = realised_noise(r.labels, r.true_labels, C)
    n = r.labels.size
    assert abs(rate - 0.36) < 5 * np.sqrt(0.36 * 0.64 / n)


def test_protocol_is_deterministic_and_seed_dependent():
    cfg = ProtocolConfig("flip", 0.4, 0.1, 100, seed=1)
    a, b = apply_protocol(CIFAR_LIKE, C, cfg), apply_protocol(CIFAR_LIKE, C, cfg)
    for field in ("meta_origin", "train_origin", "labels", "transition"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = apply_protocol(CIFAR_LIKE, C, ProtocolConfig("flip", 0.4, 0.1, 100, seed=2))
    assert not np.array_equal(a.meta_origin, c.meta_origin)
    assert not np.array_equal(a.train_origin, c.train_origin)


def test_protocol_noise_is_the_public_corrupt_labels_on_the_training_labels():
    r = apply_protocol(CIFAR_LIKE, C, ProtocolConfig("uniform", 0.5, 1.0, 0, seed=3))
    assert r.meta_origin.size == 0 and r.train_origin.size == CIFAR_LIKE.size
    t = transition_matrix(ProtocolConfig("uniform", 0.5, seed=3), C)
    np.testing.assert_array_equal(r.labels, corrupt_labels(CIFAR_LIKE, t, seed=3))


def test_long_tail_shortfall_keeps_all_and_is_logged(caplog):
    labels = np.repeat(np.arange(3), [10, 30, 30])  # class 0 cannot reach the head target
    with caplog.at_level(logging.WARNING):
        r = apply_protocol(labels, 3, ProtocolConfig(imbalance_factor=0.5, num_meta=3))
    assert r.shortfall == {0: (22, 9)} and "imbalance_factor=0.5" in caplog.text
    np.testing.assert_array_equal(np.bincount(r.true_labels), [9, 15, 11])


def test_train_per_class_caps_each_class_after_the_meta_split():
    labels = np.repeat(np.arange(4), 50)
    result = apply_protocol(labels, 4, ProtocolConfig("none", 0.0, 1.0, 8, 3, train_per_class=20))
    assert np.bincount(labels[result.train_origin], minlength=4).tolist() == [20] * 4
    assert not set(result.train_origin) & set(result.meta_origin)
    lt = apply_protocol(labels, 4, ProtocolConfig("none", 0.0, 0.1, 8, 3, train_per_class=20))
    assert lt.img_max == 20 and np.bincount(labels[lt.train_origin], minlength=4)[0] == 20
    with pytest.raises(ValueError, match="train_per_class must be a positive integer, got 0"):
        apply_protocol(labels, 4, ProtocolConfig("none", 0.0, 1.0, 8, 3, train_per_class=0))
