"""The real CIFAR-10 image folder (skipped when absent): label order and counts from the listing."""
import os

import numpy as np
import pytest

from gdw_tf.data.sources.folder import list_image_folder

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg")
pytestmark = pytest.mark.skipif(not os.path.isdir(ROOT), reason="cifar10-jpeg not present")


def test_class_order_and_counts():
    listing = list_image_folder(ROOT)
    assert listing.classes == ["airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck"]
    for split, per_class in (("train", 5000), ("test", 1000)):
        labels = np.array([f.label for f in listing.files[split]])
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), [per_class] * 10)


def test_a_few_images_decode_to_32x32_rgb():
    test = list_image_folder(ROOT).files["test"]
    paths = [os.path.join(ROOT, test[i].rel) for i in (0, 4321, 9999)]
    from gdw_tf.data.sources.folder import decode_images
    images = decode_images(paths)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
