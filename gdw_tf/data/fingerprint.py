"""What a run was trained on, kept beside it so that it is never continued, re-reported
or audited on other data.

A `DataFingerprint` lists the examples of each split as the source gives them, before
the protocol (meta split, long tail, synthetic noise: those follow from the flags and the
seed, which the run's flags.json binds): per example a key (its file, relative to
--data_dir, for file sources; else its position), the given label, the true label (-1
unknown) and a digest of its decoded pixels. A streamed release (Clothing1M) is too large
to list: its record files and their sizes stand in for its examples. `identity` holds
what else names the data (a TFDS dataset's name, version and splits).

The trainer writes it as RUN/data_fingerprint.json when a run starts; resuming, re-running
and `gdw_tf.audit` compare the data they build with it, and a difference is one line
naming what changed (`DataChanged`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from gdw_tf.files import atomic_open

FILE = "data_fingerprint.json"
FORMAT = 1
_EXAMPLES_NAMED = 3  # examples named per kind of change in a message


class DataChanged(ValueError):
    """The data differ from those a run was trained on (one line saying how)."""


def image_digests(images: np.ndarray) -> list[str]:
    """One hex digest per image of uint8 [N, ...]: equal pixels, equal digests."""
    images = np.ascontiguousarray(images)
    return [hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest() for image in images]


@dataclasses.dataclass(frozen=True)
class SplitEntries:
    """One split's examples, in the source's order: key (file relative to --data_dir, or
    position), given label, true label (-1 unknown) and pixel digest, one each."""

    keys: tuple[str, ...]
    labels: tuple[int, ...]
    true_labels: tuple[int, ...]
    digests: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class DataFingerprint:
    """The data of a run (module doc). splits: "train", "test" and, when the source gives
    one, "meta" -> SplitEntries (empty for streamed releases); identity: what else names
    the data; labels_file: the file that gave the training labels (named in messages)."""

    dataset: str
    class_names: tuple[str, ...]
    splits: dict
    identity: dict
    labels_file: str | None = None

    def to_json(self) -> dict:
        return {"format": FORMAT, "dataset": self.dataset, "class_names": list(self.class_names),
                "identity": self.identity, "labels_file": self.labels_file,
                "splits": {name: {field.name: list(getattr(entries, field.name))
                                  for field in dataclasses.fields(SplitEntries)}
                           for name, entries in self.splits.items()}}

    @classmethod
    def from_json(cls, saved: dict) -> "DataFingerprint":
        return cls(saved["dataset"], tuple(saved["class_names"]),
                   {name: SplitEntries(**{k: tuple(v) for k, v in entries.items()})
                    for name, entries in saved["splits"].items()},
                   saved["identity"], saved.get("labels_file"))

    def changes(self, now: "DataFingerprint") -> list[str]:
        """What differs in `now` from these data, one phrase per difference ([]: the same)."""
        if (self.dataset, self.identity) != (now.dataset, now.identity):
            return [f"the dataset was {_named(self.dataset, self.identity)}, now "
                    f"{_named(now.dataset, now.identity)}"]
        if self.class_names != now.class_names:
            return [f"the classes were {', '.join(self.class_names)}, "
                    f"now {', '.join(now.class_names)}"]
        found = []
        for split in sorted(set(self.splits) | set(now.splits)):
            if split not in now.splits or split not in self.splits:
                change = "removed" if split in self.splits else "added"
                found.append(f"the {split} split was {change}")
                continue
            phrases = _split_changes(self.splits[split], now.splits[split], self.class_names)
            if phrases:
                found.append(f"{split}: {', '.join(phrases)}")
        return found

    def save(self, path: str) -> str:
        with atomic_open(path, encoding="utf-8") as f:
            json.dump(self.to_json(), f, separators=(",", ":"))
            f.write("\n")
        return path


def _named(dataset, identity):
    return dataset + (f" {json.dumps(identity, sort_keys=True)}" if identity else "")


def _split_changes(old: SplitEntries, new: SplitEntries, class_names) -> list[str]:
    """Phrases saying how `new` differs from `old`: examples added, removed, relabelled
    (given or true label), or whose pixels changed, counted and the first few named."""
    before = {key: i for i, key in enumerate(old.keys)}
    after = {key: i for i, key in enumerate(new.keys)}

    def label(value):
        return class_names[value] if 0 <= value < len(class_names) else "unknown"

    kinds = {"added": [k for k in new.keys if k not in before],
             "removed": [k for k in old.keys if k not in after]}
    common = [k for k in new.keys if k in before]
    for name, field in (("relabelled", "labels"), ("given another true label", "true_labels")):
        kinds[name] = [f"{k}: {label(getattr(old, field)[before[k]])} -> "
                       f"{label(getattr(new, field)[after[k]])}"
                       for k in common
                       if getattr(old, field)[before[k]] != getattr(new, field)[after[k]]]
    kinds["with other pixels"] = [k for k in common
                                  if old.digests[before[k]] != new.digests[after[k]]]
    if not any(kinds.values()) and old.keys != new.keys:
        kinds["in another order"] = ["the examples' positions"]
    return [f"{len(items)} {'example' if len(items) == 1 else 'examples'} {name} "
            f"({'; '.join(items[:_EXAMPLES_NAMED])}"
            f"{', ...' if len(items) > _EXAMPLES_NAMED else ''})"
            for name, items in kinds.items() if items]


def of_arrays(dataset: str, splits, data_dir: str | None) -> DataFingerprint:
    """The fingerprint of in-memory `splits` (an ArraySplits) of `dataset`."""
    root = None if data_dir is None else os.path.abspath(data_dir)
    entries = {}
    for split in ("train", "meta", "test"):
        images = getattr(splits, f"{split}_images")
        if images is None:
            continue
        labels = getattr(splits, f"{split}_labels")
        true = splits.train_true_labels if split == "train" else labels
        files = getattr(splits, f"{split}_files")
        keys = ([os.path.relpath(f, root).replace(os.sep, "/") if root else f for f in files]
                if files is not None else [str(i) for i in range(len(labels))])
        entries[split] = SplitEntries(tuple(keys), tuple(int(v) for v in labels),
                                      tuple(int(v) for v in true), tuple(splits.digests(split)))
    return DataFingerprint(dataset, tuple(splits.class_names), entries,
                           dict(splits.provenance or {}),
                           None if splits.labels_file is None else splits.labels_file.path)


def of_stream(dataset: str, splits) -> DataFingerprint:
    """The fingerprint of a streamed release `splits` (a StreamSplits): its record files
    (name and size) per role stand in for its examples."""
    records = {}
    for role in sorted(splits.sizes):
        files = splits.records(role).files
        records[role] = [[os.path.basename(f), os.path.getsize(f)] for f in files]
    return DataFingerprint(dataset, tuple(splits.class_names), {}, {"records": records})


def load(path: str) -> DataFingerprint:
    """The fingerprint saved at `path`; a ValueError naming the file if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("format") != FORMAT:
            raise ValueError(f"format {saved.get('format')!r}, expected {FORMAT}")
        return DataFingerprint.from_json(saved)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: cannot read the run's data fingerprint ({error}); restore it "
                         "from a copy of the run, or train into another --output_dir") from None


def check(directory: str, now: DataFingerprint, doing: str) -> bool:
    """Compares `now` with the data the run in `directory` was trained on. Raises
    DataChanged saying what changed and that nothing was `doing` (e.g. "resumed");
    returns False when the run saved no fingerprint (made before they were kept)."""
    path = os.path.join(directory, FILE)
    if not os.path.exists(path):
        return False
    changes = load(path).changes(now)
    if changes:
        source = f" (training labels from {now.labels_file})" if now.labels_file else ""
        raise DataChanged(
            f"the data differ from those the run in {directory} was trained on{source}: "
            f"{'; '.join(changes)}. Nothing was {doing}: restore the data as they were "
            f"({FILE} there lists them), or train on the new data into another --output_dir")
    return True
