"""Label-noise transition matrices and corruption: formulas, realised rates, seeding, errors;
instance-dependent noise against a slow reference."""
import hashlib

import numpy as np
import pytest
from scipy.stats import truncnorm

import gdw_tf.data as data
from gdw_tf.data.protocol import (
    ProtocolConfig,
    apply_protocol,
    corrupt_labels,
    empirical_transition,
    expected_noise_rate,
    flip_targets,
    instance_flip_rates,
    instance_noise,
    pixel_features,
    realised_noise,
    rng_for,
    transition_matrix,
)
from gdw_tf.data.sources import SOURCES, SourceOptions
from tests.fixtures import write_image_folder

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
    np.testing.assert_array_equal(
        a, flip_targets(transition_matrix(ProtocolConfig("flip", 0.2, seed=7), C)))
    others = [flip_targets(transition_matrix(ProtocolConfig("flip", 0.4, seed=s), C))
              for s in range(8, 12)]
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
    for t in (transition_matrix(ProtocolConfig("none", 0.0), C),
              transition_matrix(ProtocolConfig("uniform", 0.0), C)):
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
    labels = corrupt_labels(np.arange(12) % 4,
                            transition_matrix(ProtocolConfig("uniform", 0.8), 4), seed=0)
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
        corrupt_labels(np.array([0, 10]), transition_matrix(ProtocolConfig("uniform", 0.1), C),
                       seed=0)


# Instance-dependent noise (Xia et al. 2020).
def reference_instance_noise(images, labels, num_classes, tau, seed, pixel_max=255.0):
    """The generator, example by example in float64, written from its definition (not from
    instance_noise): returns (noisy labels, per-example label distributions [N, C])."""
    x = images.reshape(len(images), -1).astype(np.float64) / pixel_max
    n, d = x.shape
    q = truncnorm.ppf(rng_for(seed, "instance_rates").random(n), -tau / 0.1, (1 - tau) / 0.1,
                      loc=tau, scale=0.1)
    w = rng_for(seed, "instance_projection").standard_normal((num_classes, d, num_classes))
    u = rng_for(seed, "label_noise").random(n)
    noisy, dists = [], []
    for i in range(n):
        y = labels[i]
        s = x[i] @ w[y]
        s[y] = -np.inf
        p = q[i] * np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        p[y] = 1 - q[i]
        noisy.append(min(int(np.searchsorted(np.cumsum(p), u[i], side="right")), num_classes - 1))
        dists.append(p)
    return np.array(noisy), np.array(dists)


def random_images(n, shape=(4, 4, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("n, shape, num_classes, tau", [
    (600, (4, 4, 3), 6, 0.4),
    (600, (4, 4, 3), 6, 1.0),
    (4200, (32, 32, 3), 3, 0.3),  # > 1,365 CIFAR-sized rows per class: several chunks per class
])
def test_instance_noise_matches_a_slow_reference_label_for_label(n, shape, num_classes, tau):
    images, labels = random_images(n, shape), np.arange(n) % num_classes
    config = ProtocolConfig("instance", tau, num_meta=3 * num_classes, seed=5)
    r = apply_protocol(labels, num_classes, config, features=pixel_features(images, 255.0))
    rows = r.train_origin
    noisy, dists = reference_instance_noise(images[rows], labels[rows], num_classes, tau, seed=5)
    np.testing.assert_array_equal(r.labels, noisy)
    for c in range(num_classes):
        np.testing.assert_allclose(r.transition[c], dists[labels[rows] == c].mean(axis=0),
                                   atol=1e-12)
    assert (r.labels != r.true_labels).any()


def test_instance_flip_rates_are_a_truncated_normal_by_inverse_cdf():
    q = instance_flip_rates(20_000, 0.4, seed=0)
    assert abs(q.mean() - 0.4) < 0.003 and abs(q.std() - 0.1) < 0.003
    # half the normal lies above 1: truncated, not clipped
    top = instance_flip_rates(20_000, 1.0, seed=0)
    assert top.max() < 1.0 and abs(top.mean() - (1 - 0.1 * np.sqrt(2 / np.pi))) < 0.003
    np.testing.assert_allclose(top, truncnorm.ppf(rng_for(0, "instance_rates").random(20_000),
                                                  -10.0, 0.0, loc=1.0, scale=0.1), atol=1e-9)


def test_instance_noise_is_reproducible_per_seed_and_changes_with_it():
    images, labels = random_images(2000), big_labels(n=2000)
    features = pixel_features(images, 255.0)
    a, ta = instance_noise(labels, features, C, 0.4, seed=1)
    b, tb = instance_noise(labels, features, C, 0.4, seed=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta, tb)
    assert (a != instance_noise(labels, features, C, 0.4, seed=2)[0]).mean() > 0.2


@pytest.mark.parametrize("tau", [0.2, 0.4])
def test_instance_realised_rate_is_close_to_tau_and_to_the_expected_rate(tau):
    n = 5000
    labels = big_labels(n=n)
    noisy, t = instance_noise(labels, pixel_features(random_images(n), 255.0), C, tau, seed=0)
    overall, _ = realised_noise(noisy, labels, C)
    assert within(overall, tau, n, sigmas=4)
    expected = expected_noise_rate(t, np.bincount(labels, minlength=C))
    assert within(overall, expected, n, sigmas=4) and abs(expected - tau) < 0.01
    np.testing.assert_allclose(t.sum(axis=1), 1.0)


def test_instance_zero_rate_keeps_every_label():
    labels = big_labels(n=1000)
    images = random_images(1000)
    noisy, t = instance_noise(labels, pixel_features(images, 255.0), C, 0.0, seed=0)
    np.testing.assert_array_equal(noisy, labels)
    np.testing.assert_array_equal(t, np.eye(C))
    r = apply_protocol(labels, C, ProtocolConfig("instance", 0.0, seed=0),
                       pixel_features(images, 255.0))
    np.testing.assert_array_equal(r.labels, r.true_labels)


def test_instance_flip_targets_follow_the_image_while_flip_targets_cannot():
    # Six different images of class 0 (disjoint bright pixel blocks), 2,000 copies each: under
    # instance noise each image has its own target distribution; under flip noise all of
    # them go to the class's single target.
    blocks = np.kron(np.eye(6), np.ones(8)).reshape(6, 4, 4, 3).astype(np.uint8) * 255
    images, labels = np.repeat(blocks, 2000, axis=0), np.zeros(12_000, np.int64)
    which = np.repeat(np.arange(6), 2000)
    noisy, _ = instance_noise(labels, pixel_features(images, 255.0), C, 0.6, seed=0)
    hist = np.array([np.bincount(noisy[(which == k) & (noisy != 0)], minlength=C)
                     for k in range(6)])
    hist = hist / hist.sum(axis=1, keepdims=True)
    total_variation = 0.5 * np.abs(hist[:, None] - hist[None]).sum(axis=2)
    assert total_variation.max() > 0.5
    assert np.unique(hist.argmax(axis=1)).size > 1  # the images' most likely targets differ
    flip = corrupt_labels(labels, transition_matrix(ProtocolConfig("flip", 0.6, seed=0), C), seed=0)
    assert np.unique(flip[flip != 0]).size == 1


def test_uniform_and_flip_draws_are_those_before_instance_noise():
    # Digests of the labels the protocol gave at commit 42f5a60, before instance noise existed.
    labels = big_labels(n=5000)
    for noise_type, protocol, corrupted in (("uniform", "d7417d2af2f4b86f", "fd92dbd6683054e2"),
                                            ("flip", "1f56c4aa99f2a413", "5e62e46dbfa45fc4")):
        r = apply_protocol(labels, C,
                           ProtocolConfig(noise_type, 0.4, 0.1, 0, seed=4, train_per_class=400))
        t = transition_matrix(ProtocolConfig(noise_type, 0.4, seed=4), C)
        assert ((digest(r.labels), digest(corrupt_labels(labels, t, seed=4)))
                == (protocol, corrupted))


def digest(labels):
    return hashlib.sha256(np.asarray(labels, "<i8").tobytes()).hexdigest()[:16]


def test_instance_noise_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"noise_rate must be in \[0, 1\], got 1.5"):
        ProtocolConfig("instance", 1.5)
    with pytest.raises(ValueError, match="noise_type='instance' has no fixed transition matrix"):
        transition_matrix(ProtocolConfig("instance", 0.4), C)
    labels = big_labels(n=100)
    with pytest.raises(ValueError, match="noise_type='instance' needs the training images"):
        apply_protocol(labels, C, ProtocolConfig("instance", 0.4))
    unscaled = lambda rows: random_images(100)[rows].reshape(len(rows), -1).astype(float)  # noqa: E731
    with pytest.raises(ValueError, match=r"features must lie in \[0, 1\]"):
        instance_noise(labels, unscaled, C, 0.4, seed=0)


def test_digits_build_with_instance_noise_and_its_summary():
    b = data.build("digits", noise_type="instance", noise_rate=0.4, seed=0)
    s = b.summary["noise"]
    assert s["type"] == "instance" and s["rate"] == 0.4
    t, empirical = np.array(s["transition_matrix"]), np.array(s["empirical_transition_matrix"])
    assert t.shape == empirical.shape == (10, 10) and len(s["realised_rate_per_class"]) == 10
    np.testing.assert_allclose(t.sum(axis=1), 1.0)
    np.testing.assert_allclose(empirical.sum(axis=1), 1.0)
    assert s["realised_rate"] == pytest.approx(np.mean(b.train_labels != b.train_true_labels))
    # expected rate = mean flip rate q over the training examples; realised close to it
    assert s["expected_rate"] == pytest.approx(instance_flip_rates(b.num_train, 0.4, seed=0).mean())
    assert within(s["realised_rate"], s["expected_rate"], b.num_train, sigmas=4)
    # the labels are the generator's on the digits images (pixels / 16) of the training rows
    splits = SOURCES.get("digits").load(SourceOptions())
    noisy, _ = reference_instance_noise(splits.train_images[b.train_origin], b.train_true_labels,
                                        10, 0.4, seed=0, pixel_max=16.0)
    np.testing.assert_array_equal(b.train_labels, noisy)


def test_folder_build_with_instance_noise(tmp_path):
    root = str(tmp_path / "imgs")
    write_image_folder(root, ["a", "b", "c"], {"train": [20, 20, 20], "test": [2, 2, 2]})
    b = data.build("folder", data_dir=root, cache_dir=str(tmp_path / "cache"), num_meta=6,
                   batch_size=6, noise_type="instance", noise_rate=0.5, seed=1)
    assert b.summary["noise"]["type"] == "instance"
    assert (b.train_labels != b.train_true_labels).any()
    np.testing.assert_allclose(np.array(b.summary["noise"]["transition_matrix"]).sum(axis=1), 1.0)
