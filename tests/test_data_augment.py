"""Augmentation recipes: exact crop semantics, shapes, value ranges, seeding, errors."""
import numpy as np
import pytest
import tensorflow as tf

from gdw_tf.data import available_augmentations, make_augmentation
from gdw_tf.data.augment import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    reflect_pad_crop_flip,
)

RNG = np.random.default_rng(0)
CIFAR_BATCH = RNG.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
SEED = tf.constant([1, 2], tf.int64)


def bounds(mean, std):
    mean, std = np.array(mean), np.array(std)
    return -mean / std - 1e-5, (1 - mean) / std + 1e-5


def test_registry_names():
    assert {"cifar", "flip", "imagenet", "none"} <= set(available_augmentations())


def test_gather_crop_equals_reflect_pad_slice_flip():
    offsets = RNG.integers(0, 9, (16, 2)).astype(np.int32)
    flips = RNG.random(16) < 0.5
    got = reflect_pad_crop_flip(tf.constant(CIFAR_BATCH), tf.constant(offsets),
                                tf.constant(flips), 4).numpy()
    padded = np.pad(CIFAR_BATCH, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    for i, ((r, c), f) in enumerate(zip(offsets, flips)):
        want = padded[i, r:r + 32, c:c + 32]
        np.testing.assert_array_equal(got[i], want[:, ::-1] if f else want)


def test_cifar_train_shape_range_and_seeding():
    aug = make_augmentation("cifar", (32, 32, 3))
    assert aug.batched and aug.output_shape == (32, 32, 3)
    out = aug.train(tf.constant(CIFAR_BATCH), SEED).numpy()
    assert out.shape == (16, 32, 32, 3) and out.dtype == np.float32
    lo, hi = bounds(CIFAR_MEAN, CIFAR_STD)
    assert (out >= lo).all() and (out <= hi).all()
    np.testing.assert_array_equal(out, aug.train(tf.constant(CIFAR_BATCH), SEED).numpy())
    assert not np.array_equal(out, aug.train(tf.constant(CIFAR_BATCH), SEED + 1).numpy())
    # every output image is some crop/flip of its own input: per-image mean stays close
    test = aug.test(tf.constant(CIFAR_BATCH)).numpy()
    assert np.abs(out.mean(axis=(1, 2, 3)) - test.mean(axis=(1, 2, 3))).max() < 0.2


def test_cifar_test_is_normalisation_only():
    aug = make_augmentation("cifar", (32, 32, 3))
    want = (CIFAR_BATCH / 255.0 - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    np.testing.assert_allclose(aug.test(tf.constant(CIFAR_BATCH)).numpy(), want, atol=1e-5)


def test_imagenet_train_and_test_on_varying_sizes():
    aug = make_augmentation("imagenet", (None, None, 3))
    assert not aug.batched and aug.output_shape == (224, 224, 3)
    lo, hi = bounds(IMAGENET_MEAN, IMAGENET_STD)
    for shape in [(40, 60, 3), (300, 256, 3)]:
        image = tf.constant(RNG.integers(0, 256, shape, dtype=np.uint8))
        for out in (aug.train(image, SEED), aug.test(image)):
            out = out.numpy()
            assert out.shape == (224, 224, 3) and out.dtype == np.float32
            assert (out >= lo - 0.01).all() and (out <= hi + 0.01).all()  # antialiasing overshoot
    flat = tf.fill([256, 300, 3], tf.constant(128, tf.uint8))
    want = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(aug.test(flat).numpy(), np.broadcast_to(want, (224, 224, 3)),
                               atol=1e-4)


def test_imagenet_test_is_a_centre_crop():
    # A 256x256 image needs no resize: the test crop is exactly rows/cols 16..239.
    aug = make_augmentation("imagenet", (256, 256, 3))
    image = RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    want = (image[16:240, 16:240] / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(aug.test(tf.constant(image)).numpy(), want, atol=1e-4)


def test_flip_mirrors_about_half_the_images_and_nothing_else():
    aug = make_augmentation("flip", (32, 32, 3))
    scaled = CIFAR_BATCH.astype(np.float32) / 255
    got = aug.train(tf.constant(CIFAR_BATCH), SEED).numpy()
    mirrored = [np.array_equal(g, x[:, ::-1]) for g, x in zip(got, scaled)]
    kept = [np.array_equal(g, x) for g, x in zip(got, scaled)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 0 < sum(mirrored) < len(got)
    np.testing.assert_array_equal(aug.train(tf.constant(CIFAR_BATCH), SEED).numpy(), got)
    np.testing.assert_array_equal(aug.test(tf.constant(CIFAR_BATCH)).numpy(), scaled)
    one = make_augmentation("flip", (None, None, 3)).train(tf.constant(CIFAR_BATCH[0]), SEED)
    assert np.array_equal(one, scaled[0]) or np.array_equal(one, scaled[0][:, ::-1])


def test_none_scales_digits_to_unit_range():
    aug = make_augmentation("none", (8, 8, 1), pixel_max=16)
    x = tf.constant(np.array([0, 8, 16], np.uint8)[:, None, None, None]
                    * np.ones((1, 8, 8, 1), np.uint8))
    np.testing.assert_allclose(aug.test(x).numpy(), [np.full((8, 8, 1), v) for v in (0, 0.5, 1)])
    np.testing.assert_array_equal(aug.train(x, SEED).numpy(), aug.test(x).numpy())


@pytest.mark.parametrize("name, shape, needle", [
    ("fancy", (32, 32, 3), "unknown augmentation (augment) 'fancy'"),
    ("cifar", (8, 8, 1), "augment=cifar needs 3-channel images, got image shape (8, 8, 1)"),
    ("cifar", (None, None, 3), "augment=cifar needs fixed-size images"),
    ("imagenet", (64, 64, 1), "augment=imagenet needs 3-channel images"),
])
def test_bad_augment_requests_name_the_flag(name, shape, needle):
    with pytest.raises(ValueError) as err:
        make_augmentation(name, shape)
    assert needle in str(err.value)
