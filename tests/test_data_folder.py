"""The image-folder source end to end: listing, decoding, cache, protocol, pipelines, errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import gdw_tf.data as data
from gdw_tf.data.sources import folder as folder_source
from tests.fixtures import write_image_folder

CLASSES = ["cat", "ant", "bee"]          # written unsorted; labels follow sorted names
SORTED = sorted(CLASSES)                 # ant=0, bee=1, cat=2
TRAIN = {"ant": 12, "bee": 10, "cat": 14}
TEST = {"ant": 3, "bee": 2, "cat": 4}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("folder") / "imgs")
    write_image_folder(root, SORTED, {"train": [TRAIN[c] for c in SORTED],
                                      "test": [TEST[c] for c in SORTED]})
    # one JPEG among the PNGs, and a non-image file that must be skipped
    Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(
        os.path.join(root, "train", "bee", "extra.jpg"))
    open(os.path.join(root, "train", "bee", "notes.txt"), "w").write("not an image")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def build(root, cache, **kw):
    kw = {"num_meta": 6, "batch_size": 4, "augment": "cifar", "cache_dir": cache, **kw}
    return data.build("folder", data_dir=root, **kw)


@pytest.fixture(scope="module")
def bundle(root, cache):
    return build(root, cache, noise_type="uniform", noise_rate=0.5, seed=3)


def test_listing_sorts_classes_and_skips_non_images(root):
    listing = folder_source.list_image_folder(root)
    assert listing.classes == SORTED
    counts = np.bincount([f.label for f in listing.files["train"]], minlength=3)
    np.testing.assert_array_equal(counts, [12, 11, 14])  # bee has the extra JPEG
    assert not any(f.rel.endswith(".txt") for f in listing.files["train"])


def test_decoded_pixels_match_pil(root, cache):
    splits = folder_source.load_image_folder(root, cache)
    train = folder_source.list_image_folder(root).files["train"]
    for i in (0, len(train) - 1):
        want = np.asarray(Image.open(os.path.join(root, train[i].rel)).convert("RGB"))
        np.testing.assert_array_equal(splits.train_images[i], want)
    assert splits.train_images.dtype == np.uint8 and splits.image_shape == (12, 12, 3)


def test_second_load_comes_from_cache_and_changes_invalidate_it(monkeypatch, tmp_path):
    root, cache = str(tmp_path / "imgs"), str(tmp_path / "cache")
    write_image_folder(root, ["a", "b"], {"train": [3, 3], "test": [1, 1]})
    first = folder_source.load_image_folder(root, cache)
    assert [f for f in os.listdir(cache) if f.endswith(".npz")]

    def no_decode(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(folder_source, "decode_images", no_decode)
    again = folder_source.load_image_folder(root, cache)  # served from the cache
    np.testing.assert_array_equal(again.train_images, first.train_images)
    target = os.path.join(root, "train", "a", "0000.png")
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(target)  # new size and mtime
    with pytest.raises(AssertionError, match="decoded although cached"):
        folder_source.load_image_folder(root, cache)


def test_bundle_sizes_and_counts(bundle):
    s = bundle.summary
    assert bundle.class_names == SORTED and bundle.num_classes == 3
    assert bundle.num_meta == 6 and s["counts"]["meta"] == [2, 2, 2]
    assert s["counts"]["train_true"] == [10, 9, 12]   # [12, 11, 14] minus 2 each
    assert s["counts"]["test"] == [3, 2, 4] and bundle.num_test == 9
    assert bundle.num_train == 31 and bundle.steps_per_epoch == 31 // 4
    assert bundle.image_shape == (12, 12, 3)
    json.dumps(s)  # JSON-serialisable


def test_train_epoch_elements(bundle):
    indices, batches = [], 0
    for batch in bundle.train:
        batches += 1
        assert batch["image"].shape == (4, 12, 12, 3) and batch["image"].dtype.name == "float32"
        idx = batch["index"].numpy()
        np.testing.assert_array_equal(batch["label"].numpy(), bundle.train_labels[idx])
        np.testing.assert_array_equal(batch["true_label"].numpy(), bundle.train_true_labels[idx])
        assert all(batch[k].dtype.name == "int32" for k in ("label", "true_label", "index"))
        indices.append(idx)
    indices = np.concatenate(indices)
    assert batches == bundle.steps_per_epoch                     # drop_remainder, one epoch
    assert len(set(indices)) == indices.size and indices.max() < bundle.num_train
    second = np.concatenate([b["index"].numpy() for b in bundle.train])
    assert not np.array_equal(indices, second)                   # reshuffled each epoch


def test_positioned_pipelines_restart_anywhere_with_the_same_batches(bundle):
    steps = bundle.steps_per_epoch
    whole = list(bundle.train_from(0, 3 * steps))
    assert len(whole) == 3 * steps
    for epoch in range(3):
        idx = np.concatenate([b["index"].numpy() for b in whole[epoch * steps:(epoch + 1) * steps]])
        assert len(set(idx)) == idx.size == steps * bundle.batch_size  # an epoch: no repeats
        np.testing.assert_array_equal(
            whole[epoch * steps]["label"].numpy(),
            bundle.train_labels[whole[epoch * steps]["index"].numpy()])
    # reshuffled
    assert not np.array_equal(whole[0]["index"].numpy(), whole[steps]["index"].numpy())
    tail = list(bundle.train_from(steps + 1, 3 * steps))  # resumed at step 1 of epoch 1
    assert len(tail) == len(whole) - steps - 1
    for a, b in zip(whole[steps + 1:], tail):
        for key in a:
            # images: same augmentation
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    meta = [x for x, _ in bundle.meta_from(0).take(7)]
    again = [x for x, _ in bundle.meta_from(5).take(2)]
    np.testing.assert_array_equal(meta[5].numpy(), again[0].numpy())
    np.testing.assert_array_equal(meta[6].numpy(), again[1].numpy())


def test_meta_is_clean_balanced_and_disjoint(bundle, root, cache):
    splits = folder_source.load_image_folder(root, cache)
    assert np.intersect1d(bundle.meta_origin, bundle.train_origin).size == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([bundle.meta_origin, bundle.train_origin])),
        np.arange(len(splits.train_labels)))
    np.testing.assert_array_equal(bundle.train_true_labels,
                                  splits.train_labels[bundle.train_origin])
    meta_images = {img.tobytes() for img in splits.train_images[bundle.meta_origin]}
    train_images = {img.tobytes() for img in splits.train_images[bundle.train_origin]}
    assert not meta_images & train_images                        # disjoint by content too
    labels = np.concatenate([y.numpy() for _, y in bundle.meta_once])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    it = iter(bundle.meta)                                        # infinite, batched
    for _ in range(5):
        image, label = next(it)
        assert image.shape == (4, 12, 12, 3) and label.shape == (4,)


def test_test_split_is_not_augmented(bundle, root, cache):
    splits = folder_source.load_image_folder(root, cache)
    images = np.concatenate([x.numpy() for x, _ in bundle.test])
    labels = np.concatenate([y.numpy() for _, y in bundle.test])
    want = data.make_augmentation("cifar", (12, 12, 3)).test(splits.test_images).numpy()
    np.testing.assert_allclose(images, want, atol=1e-6)
    np.testing.assert_array_equal(labels, splits.test_labels)


def test_determinism_under_seed(root, cache, bundle):
    kw = dict(noise_type="uniform", noise_rate=0.5, seed=3)
    a, b = build(root, cache, **kw), build(root, cache, **kw)
    np.testing.assert_array_equal(a.train_labels, bundle.train_labels)
    np.testing.assert_array_equal(a.meta_origin, bundle.meta_origin)
    for _ in range(2):  # epoch after epoch: same order, same augmentation
        for x, y in zip(a.train, b.train):
            for k in x:
                np.testing.assert_array_equal(x[k].numpy(), y[k].numpy())
    np.testing.assert_array_equal(next(iter(a.meta))[0].numpy(), next(iter(b.meta))[0].numpy())
    other = build(root, cache, noise_type="uniform", noise_rate=0.5, seed=4)
    assert not np.array_equal(other.meta_origin, bundle.meta_origin)
    assert not np.array_equal(next(iter(other.train))["index"].numpy(),
                              next(iter(a.train))["index"].numpy())


def test_pairs_with_with_meta(bundle):
    paired = next(iter(data.with_meta(bundle.train, bundle.meta)))
    assert paired["image"].shape == (4, 12, 12, 3) and paired["meta_image"].shape == (4, 12, 12, 3)


def test_summary_file(bundle, tmp_path):
    path = bundle.write_summary(str(tmp_path / "sub" / "summary.json"))
    s = json.load(open(path))
    assert s["dataset"] == "folder" and s["noise"]["type"] == "uniform"
    assert s["protocol"]["order"] == ["meta_split", "long_tail", "label_noise"]
    assert len(s["noise"]["transition_matrix"]) == 3 and s["num_classes"] == 3


# ----- bad input ---------------------------------------------------------------------------

def copy_tree(root, tmp_path):
    import shutil
    dst = str(tmp_path / "bad")
    shutil.copytree(root, dst)
    return dst


def test_undecodable_image_is_named(root, tmp_path):
    bad = copy_tree(root, tmp_path)
    path = os.path.join(bad, "train", "cat", "broken.jpg")
    open(path, "wb").write(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="cannot decode image file .*broken.jpg"):
        folder_source.load_image_folder(bad, str(tmp_path / "c"))


def test_image_of_another_size_is_named(root, tmp_path):
    bad = copy_tree(root, tmp_path)
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(os.path.join(bad, "test", "ant", "odd.png"))
    with pytest.raises(ValueError, match=r"odd.png has shape \(9, 7, 3\)"):
        folder_source.load_image_folder(bad, str(tmp_path / "c"))


def test_test_class_missing_from_train_is_named(root, tmp_path):
    bad = copy_tree(root, tmp_path)
    os.makedirs(os.path.join(bad, "test", "wasp"))
    with pytest.raises(ValueError, match="class folder .*test/wasp has no counterpart"):
        folder_source.list_image_folder(bad)


def test_missing_root_and_split_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data_dir={tmp_path}/nope"):
        data.build("folder", data_dir=str(tmp_path / "nope"))
    os.makedirs(tmp_path / "half" / "train" / "a")
    with pytest.raises(FileNotFoundError, match="missing split folder .*half/test"):
        folder_source.list_image_folder(str(tmp_path / "half"))


@pytest.mark.parametrize("kw, needle", [
    ({"num_meta": 7}, "num_meta=7 is not divisible"),
    ({"num_meta": 60}, "num_meta=60 asks 20 meta examples per class"),
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": 500}, "batch_size=500 exceeds the 31 training examples"),
    ({"augment": "bogus"}, "'bogus'"),
    ({"noise_type": "flip", "noise_rate": 2}, "noise_rate must be in [0, 1], got 2"),
    ({"imbalance_factor": 0}, "imbalance_factor must be in (0, 1], got 0"),
])
def test_bad_flags_are_named(root, cache, kw, needle):
    with pytest.raises(ValueError) as err:
        build(root, cache, **kw)
    assert needle in str(err.value)


def test_unknown_dataset_lists_the_registry():
    with pytest.raises(ValueError) as err:
        data.build("imagenet21k")
    assert "'imagenet21k'" in str(err.value) and "cifar10" in str(err.value)
    assert ({"cifar10", "cifar100", "folder", "clothing1m", "digits"}
            <= set(data.available_datasets()))
