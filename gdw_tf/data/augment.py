"""Augmentation recipes, selected by name (``--augment``) from a registry.

A recipe is built for a dataset's stored image shape and pixel range and gives
two TF functions returning float32 images:

- ``train(images, seed)``: random augmentation, driven only by the stateless
  int64 `seed` [2] (so a pipeline that feeds reproducible seeds is
  reproducible);
- ``test(images)``: deterministic preprocessing for evaluation.

``batched`` recipes act on a batch [B, H, W, C] (fixed-size images, fast);
the others act on one image [H, W, C] of any size.

Registered recipes:
- ``cifar``:    4-pixel reflect pad, random HxW crop, horizontal flip, then
                per-channel normalisation (CIFAR mean/std). Test: normalisation.
- ``imagenet``: resize the shorter side to 256, random 224x224 crop, horizontal
                flip, ImageNet mean/std. Test: resize 256, centre crop 224.
- ``flip``:     horizontal flip only, pixels scaled to [0, 1] as ``none``. Test:
                the scaling. Lighter than ``cifar``: a model of small capacity
                memorises noisy labels gradually under it (see docs/evidence.md).
- ``none``:     no augmentation; pixels scaled to [0, 1] by the dataset's
                maximum pixel value (255, or 16 for digits).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from gdw_tf.registry import Registry

CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A built recipe: see the module docstring for the calling conventions."""

    name: str
    train: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    test: Callable[[tf.Tensor], tf.Tensor]
    batched: bool
    output_shape: tuple  # [H, W, C] of one output image


AUGMENTATIONS = Registry("augmentation (augment)")
register = AUGMENTATIONS.register


def available_augmentations() -> list[str]:
    return AUGMENTATIONS.names()


def make_augmentation(name: str, image_shape, pixel_max: float = 255.0) -> Augmentation:
    """Builds recipe `name` for stored images of `image_shape` ([H, W, C], H/W may be None)."""
    return AUGMENTATIONS.get(name)(tuple(image_shape), float(pixel_max))


# What each recipe leaves: (x / pixel_max - mean) / std per channel, x the stored pixels.
_OUTPUT_NORMALIZATION = {
    "cifar": (CIFAR_MEAN, CIFAR_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "flip": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def output_normalization(name: str) -> tuple[tuple, tuple]:
    """(mean, std) per RGB channel of recipe `name`'s images: (x / pixel_max - mean) / std."""
    AUGMENTATIONS.get(name)
    return _OUTPUT_NORMALIZATION[name]


def _require(name: str, image_shape: tuple, *, channels: int | None = None, fixed: bool = False):
    if channels is not None and image_shape[-1] != channels:
        raise ValueError(f"augment={name} needs {channels}-channel images, "
                         f"got image shape {image_shape}")
    if fixed and None in image_shape:
        raise ValueError(
            f"augment={name} needs fixed-size images, got image shape {image_shape} "
            "(use augment=imagenet for images of varying size)"
        )


def _normaliser(pixel_max: float, mean, std):
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)

    def normalise(x):
        return (tf.cast(x, tf.float32) / pixel_max - mean) / std

    return normalise


def _reflect(idx, size: int):
    """Maps indices in [-(size-1), 2*size-2] into [0, size) by edge-excluding reflection."""
    idx = tf.abs(idx)
    return (size - 1) - tf.abs((size - 1) - idx)


def reflect_pad_crop_flip(images, offsets, flips, pad: int):
    """Crops each image of [B, H, W, C] at `offsets` int32 [B, 2] (row, col in 0..2*pad)
    of its `pad`-pixel reflect-padded version, mirroring it where `flips` bool [B].

    Same result as tf.pad(..., "REFLECT") + slice + flip, done as two gathers.
    """
    _, h, w, _ = images.shape
    rows = _reflect(offsets[:, :1] - pad + tf.range(h)[None, :], h)
    cols = offsets[:, 1:] - pad + tf.range(w)[None, :]
    cols = _reflect(tf.where(flips[:, None], tf.reverse(cols, axis=[1]), cols), w)
    out = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


@register("cifar")
def cifar(image_shape: tuple, pixel_max: float, pad: int = 4) -> Augmentation:
    _require("cifar", image_shape, channels=3, fixed=True)
    h, w, _ = image_shape
    if pad >= min(h, w):
        raise ValueError(f"augment=cifar pads by {pad} pixels, "
                         f"too many for image shape {image_shape}")
    normalise = _normaliser(pixel_max, CIFAR_MEAN, CIFAR_STD)

    def train(images, seed):
        seeds = tf.random.experimental.stateless_split(seed, 2)
        n = tf.shape(images)[0]
        offsets = tf.random.stateless_uniform([n, 2], seeds[0], 0, 2 * pad + 1, dtype=tf.int32)
        flips = tf.random.stateless_uniform([n], seeds[1]) < 0.5
        return normalise(reflect_pad_crop_flip(images, offsets, flips, pad))

    return Augmentation("cifar", train, normalise, batched=True, output_shape=tuple(image_shape))


@register("imagenet")
def imagenet(image_shape: tuple, pixel_max: float, resize: int = 256,
             crop: int = 224) -> Augmentation:
    _require("imagenet", image_shape, channels=3)
    normalise = _normaliser(pixel_max, IMAGENET_MEAN, IMAGENET_STD)

    def resize_shorter(image):
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        size = tf.cast(tf.round(hw * (resize / tf.reduce_min(hw))), tf.int32)
        return tf.image.resize(image, tf.maximum(size, resize), antialias=True)

    def train(image, seed):
        seeds = tf.random.experimental.stateless_split(seed, 2)
        x = tf.image.stateless_random_crop(resize_shorter(image), [crop, crop, 3], seeds[0])
        x = tf.image.stateless_random_flip_left_right(x, seeds[1])
        return tf.ensure_shape(normalise(x), [crop, crop, 3])

    def test(image):
        x = resize_shorter(image)
        hw = tf.shape(x)[:2]
        top, left = (hw[0] - crop) // 2, (hw[1] - crop) // 2
        x = x[top:top + crop, left:left + crop]
        return tf.ensure_shape(normalise(x), [crop, crop, 3])

    return Augmentation("imagenet", train, test, batched=False, output_shape=(crop, crop, 3))


def _scaler(pixel_max: float):
    def scale(x):
        return tf.cast(x, tf.float32) / pixel_max

    return scale


@register("flip")
def flip(image_shape: tuple, pixel_max: float) -> Augmentation:
    scale = _scaler(pixel_max)

    def train(images, seed):  # [B, H, W, C] or [H, W, C]: mirror the width axis
        x = scale(images)
        if None in image_shape:
            return tf.image.stateless_random_flip_left_right(x, seed)
        flips = tf.random.stateless_uniform([tf.shape(x)[0]], seed) < 0.5
        return tf.where(flips[:, None, None, None], tf.reverse(x, axis=[2]), x)

    return Augmentation("flip", train, scale, batched=None not in image_shape,
                        output_shape=tuple(image_shape))


@register("none")
def none(image_shape: tuple, pixel_max: float) -> Augmentation:
    scale = _scaler(pixel_max)
    return Augmentation("none", lambda x, seed: scale(x), scale, batched=None not in image_shape,
                        output_shape=tuple(image_shape))

