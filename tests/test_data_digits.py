"""The embedded default dataset: scikit-learn digits, offline, with a fixed train/test split."""
import numpy as np
import pytest

import gdw_tf.data as data


@pytest.fixture(scope="module")
def bundle():
    return data.build("digits", noise_type="uniform", noise_rate=0.4, seed=0, batch_size=50)


def test_default_dataset_and_sizes(bundle):
    assert data.DEFAULT_DATASET == "digits"
    assert bundle.num_classes == 10 and bundle.image_shape == (8, 8, 1) and bundle.augment == "none"
    assert bundle.num_meta == 100 and bundle.summary["counts"]["meta"] == [10] * 10
    assert bundle.num_test == 445 and bundle.num_train == 1352 - 100
    assert bundle.steps_per_epoch == 1252 // 50


def test_split_is_fixed_and_independent_of_seed(bundle):
    other = data.build("digits", seed=7, batch_size=50)
    assert other.summary["counts"]["test"] == bundle.summary["counts"]["test"]
    ya = np.concatenate([y.numpy() for _, y in bundle.test])
    yb = np.concatenate([y.numpy() for _, y in other.test])
    np.testing.assert_array_equal(ya, yb)
    # the meta draw does follow the seed
    assert not np.array_equal(other.meta_origin, bundle.meta_origin)


def test_values_in_unit_range(bundle):
    batch = next(iter(bundle.train))
    x = batch["image"].numpy()
    assert x.shape == (50, 8, 8, 1) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_realised_noise_in_summary(bundle):
    s = bundle.summary["noise"]
    changed = np.mean(bundle.train_labels != bundle.train_true_labels)
    assert s["realised_rate"] == pytest.approx(changed)
    assert s["expected_rate"] == pytest.approx(0.36)
    assert abs(changed - 0.36) < 5 * np.sqrt(0.36 * 0.64 / bundle.num_train)


def test_long_tail_shortfall_is_reported():
    b = data.build("digits", imbalance_factor=0.1, batch_size=10)
    imb = b.summary["imbalance"]
    assert imb["img_max"] == pytest.approx((1352 - 100) / 10)
    kept = b.summary["counts"]["train_true"]
    for c, target in enumerate(imb["target_counts"]):
        short = imb["shortfall"].get(str(c))
        assert kept[c] == (short[1] if short else target)


def test_each_pipeline_follows_its_role():
    import tensorflow as tf

    from gdw_tf.data.bundle import ROLES
    b = data.build("digits", seed=1, batch_size=64, meta_batch_size=30)
    batch = {"train": 64, "meta": 30}
    assert set(ROLES) == {"train", "meta", "meta_once", "test"}
    for name, role in ROLES.items():
        ds = getattr(b, name)
        spec = ds.element_spec
        assert isinstance(spec, dict) == (role.split == "train"), name
        image = spec["image"] if isinstance(spec, dict) else spec[0]
        assert image.shape[0] == (batch[role.batch] if role.drop_remainder else None), name
        assert (int(ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY)) == role.repeat, name
    assert [len(y) for _, y in b.meta_once] == [30, 30, 30, 10]         # the 100 meta examples once
    assert len(list(b.test)) == -(-b.num_test // 64)                     # the last test batch too
    test_labels = np.concatenate([y.numpy() for _, y in b.test])
    # unshuffled
    np.testing.assert_array_equal(test_labels, np.concatenate([y.numpy() for _, y in b.test]))
    assert [len(y) for _, y in b.meta_from(0).take(4)] == [30] * 4
    assert len(list(b.train_from(0, 3))) == 3
