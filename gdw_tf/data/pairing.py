"""Pairs each training batch with a meta batch, the input of `GDWModel.fit`.

The paired element is one flat dict:
  image [B, ...], label int [B], optionally true_label int [B] and index int [B]
  (from the training batch), meta_image [M, ...] and meta_label int [M].
"""
import tensorflow as tf

TRAIN_KEYS = ("image", "label", "true_label", "index")
META_KEYS = ("meta_image", "meta_label")


def _as_dict(element, where):
    """(x, y) or {"image", "label", ...} -> dict with at least image and label."""
    if isinstance(element, dict):
        missing = [k for k in ("image", "label") if k not in element]
        unknown = [k for k in element if k not in TRAIN_KEYS + META_KEYS]
        if missing or unknown:
            raise ValueError(
                f"{where}: dict elements need keys 'image' and 'label' (optional "
                f"'true_label', 'index'); missing {missing}, unknown {unknown}")
        return dict(element)
    if isinstance(element, (tuple, list)) and len(element) == 2:
        return {"image": element[0], "label": element[1]}
    raise ValueError(
        f"{where}: expected (image, label) pairs or a dict with 'image' and "
        f"'label', got {type(element).__name__} of length "
        f"{len(element) if hasattr(element, '__len__') else '?'}")


def _check_batched(dataset, where):
    spec = dataset.element_spec
    label_spec = spec["label"] if isinstance(spec, dict) else spec[1]
    if label_spec.shape.rank != 1:
        raise ValueError(
            f"{where}: labels must be batched, shape [batch], got "
            f"{label_spec.shape}; call .batch(...) first")


def with_meta(train_ds, meta_ds):
    """Pairs every training batch with a batch of the (repeated) meta set.

    Args:
      train_ds: batched `tf.data.Dataset` of (image, label) or dicts with
        image, label and optionally true_label and index. One pass = one epoch.
      meta_ds: batched `tf.data.Dataset` of clean (image, label) (or dicts);
        repeated forever, so it may be shorter than train_ds.
    Returns:
      A dataset with as many elements as train_ds, each one flat dict.
    """
    _check_batched(train_ds, "with_meta(train_ds)")
    _check_batched(meta_ds, "with_meta(meta_ds)")
    if not isinstance(train_ds.element_spec, dict):
        train_ds = train_ds.map(lambda *e: _as_dict(e, "train_ds"))
    if isinstance(meta_ds.element_spec, dict):
        meta_ds = meta_ds.map(lambda e: (e["image"], e["label"]))
    meta_ds = meta_ds.repeat()

    def merge(train, meta):
        return {**_as_dict(train, "train_ds"),
                "meta_image": meta[0], "meta_label": meta[1]}

    return tf.data.Dataset.zip((train_ds, meta_ds)).map(merge)


def split_batch(data, needs_meta):
    """Splits a step's input into (batch dict, (meta_image, meta_label) or None).

    Raises a ValueError (at trace time) when a meta method gets no meta batch.
    """
    batch = _as_dict(data, "training data")
    meta = None
    if "meta_image" in batch:
        meta = (batch.pop("meta_image"), batch.pop("meta_label"))
    if needs_meta and meta is None:
        raise ValueError(
            "this method learns its weights from a clean meta set, but the "
            "training data has no meta batch: fit on "
            "gdw_tf.data.with_meta(train_ds, meta_ds)")
    return batch, meta
