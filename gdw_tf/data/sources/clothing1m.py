"""``clothing1m``: the Clothing1M TFDS dataset, built once from --manual_dir.

The first call with --manual_dir=<release> writes sharded TFRecords under
--data_dir (default ~/tensorflow_datasets); later calls just read them.
Roles: train = noisy_train (real web noise), meta = clean_val, test = clean_test.
No synthetic noise, long tail or num_meta apply (gdw_tf.data.build rejects them
before reading anything). The build decodes every image before writing; bad
images fail it in one error, or are left out with --skip_bad_images.
"""
from __future__ import annotations

import os
import random

from gdw_tf.data.sources.base import RecordFiles, SourceOptions, StreamSplits, register_source

NUM_CLASSES = 14

ROLES = {"train": "noisy_train", "meta": "clean_val", "test": "clean_test"}


def clothing1m_builder(data_dir: str | None, skip_bad_images: bool = False):
    from gdw_tf.data.sources.clothing1m_tfds import Clothing1m

    return Clothing1m(data_dir=data_dir, skip_bad_images=skip_bad_images)


def prepare_clothing1m(data_dir: str | None, manual_dir: str | None, skip_bad_images: bool = False):
    """Returns the prepared builder, building it from `manual_dir` if needed."""
    import tensorflow_datasets as tfds

    from gdw_tf.data.sources.clothing1m_tfds import read_release

    builder = clothing1m_builder(data_dir, skip_bad_images)
    if not builder.is_prepared():
        if manual_dir is None:
            root = data_dir or os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
            raise FileNotFoundError(
                f"clothing1m is not prepared under data_dir={root} (looked for "
                f"{builder.data_dir}); pass manual_dir=<Clothing1M release directory> "
                "to build it there once"
            )
        read_release(manual_dir)  # fail fast, naming the missing file
        # TFDS draws from `random` while building; restored, so that a run that builds the
        # dataset initialises its model exactly as a run that reuses it.
        state = random.getstate()
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        finally:
            random.setstate(state)
    return builder


@register_source("clothing1m", default_num_meta=None, default_augment="imagenet",
                 fixed_protocol=f"real label noise and a fixed meta set "
                                f"(its {ROLES['meta']} split)",
                 options=("data_dir", "manual_dir", "skip_bad_images"),
                 num_classes=NUM_CLASSES, stored_shape=(None, None, 3))
def load_clothing1m(options: SourceOptions) -> StreamSplits:
    """Clothing1M (TFDS, built from --manual_dir into --data_dir); meta set = clean_val."""
    import tensorflow_datasets as tfds

    builder = prepare_clothing1m(options.data_dir, options.manual_dir, options.skip_bad_images)
    meta = builder.info.metadata
    sizes = {role: builder.info.splits[split].num_examples for role, split in ROLES.items()}
    counts = {role: list(meta["counts"][split]) for role, split in ROLES.items()}
    counts["train_true"] = list(meta["noisy_train_true_counts"])

    def read(role: str, shuffle_files: bool, seed: int):
        return builder.as_dataset(
            split=ROLES[role],
            shuffle_files=shuffle_files,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
        )

    def records(role: str) -> RecordFiles:
        if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
            raise ValueError(f"clothing1m under {builder.data_dir} is stored as "
                             f"{builder.info.file_format.value}, not tfrecord; rebuild it")
        files = builder.info.splits[ROLES[role]].file_instructions
        decoders = {"image": tfds.decode.SkipDecoding()}
        return RecordFiles(tuple(f.filename for f in files), tuple(f.take for f in files),
                           lambda s: builder.info.features.deserialize_example(
                               s, decoders=decoders))

    noise = {
        "type": "real",
        "known_true_label": meta["noisy_train_known_true_label"],
        "realised_rate": meta["noisy_train_noise_rate"],
        "realised_rate_per_class": meta["noisy_train_noise_rate_per_class"],
        "empirical_transition_matrix": meta["noisy_train_empirical_transition"],
    }
    skipped = list(meta.get("skipped_images", []))
    train_files = None
    if options.manual_dir:
        def train_files():
            return _release_train_files(options.manual_dir, skipped, sizes["train"])
    return StreamSplits(list(builder.info.features["label"].names), (None, None, 3), read,
                        sizes, counts, noise, dict(ROLES), records, skipped_images=skipped,
                        train_files=train_files)


def _release_train_files(manual_dir, skipped, num_train):
    """The file of each noisy_train image by training index: the release's key list without
    the images the build left out (`skipped`); None, with a warning, if the release under
    `manual_dir` no longer lists the `num_train` images the build holds."""
    from absl import logging

    from gdw_tf.data.sources.clothing1m_tfds import read_release

    root = os.path.abspath(manual_dir)
    left_out = set(skipped)
    files = [os.path.join(root, key) for key, _, _ in read_release(root).splits["noisy_train"]
             if key not in left_out]
    if len(files) != num_train:
        logging.warning("%s lists %d training images, the prepared dataset %d: no image paths "
                        "for the label-issue report", root, len(files), num_train)
        return None
    return files
