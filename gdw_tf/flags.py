"""Every command-line flag of `python -m gdw_tf.train`, defined and validated here."""
from absl import flags

from gdw_tf.data.protocol import NOISE_TYPES
from gdw_tf.defaults import FINE_TUNE_LR, SYNTHETIC_NOISE_RATE, per_dataset

FLAGS = flags.FLAGS

# Data (gdw_tf.data.build).
flags.DEFINE_string("dataset", "digits", "Dataset name: digits, folder, cifar10, cifar100, "
                    "clothing1m, or tfds:NAME[/CONFIG] for any prepared TFDS image-classification "
                    "dataset (e.g. tfds:cifar10_n, "
                    "tfds:controlled_noisy_web_labels/mini_imagenet_red).")
flags.DEFINE_string("data_dir", None, "Prepared TFDS directory, or ROOT of an image folder "
                    "(--dataset=folder).")
flags.DEFINE_string("label_key", "label", "tfds: datasets: the ClassLabel feature to train on "
                    "(e.g. worse_label for tfds:cifar10_n).")
flags.DEFINE_string("true_label_key", None, "tfds: datasets: a ClassLabel feature holding the "
                    "clean label (e.g. label for tfds:cifar10_n): the truth of every diagnostic, "
                    "the test split's labels, and the feature the clean meta set is held out by "
                    "(--meta_source=given means truth then). Unset: the truth is unknown, the test "
                    "labels are --label_key's and no clean meta set exists (--meta_source=auto, "
                    "or a method without a meta set).")
flags.DEFINE_string("train_split", "train", "tfds: datasets: the training split (e.g. train_40 for "
                    "controlled_noisy_web_labels).")
flags.DEFINE_string("test_split", "test", "tfds: datasets: the test split (e.g. validation for "
                    "controlled_noisy_web_labels).")
flags.DEFINE_integer("image_size", None, "Resize every image (train, meta, test) to N x N when the "
                     "data is loaded (in-memory datasets: digits, folder, cifar, tfds:); needed "
                     "for datasets whose images vary in size. Default: as stored; with "
                     "--model=keras:NAME, the size the application was trained at (e.g. 224); with "
                     "keras_hub:PRESET, its image converter's.")
flags.DEFINE_string("manual_dir", None, "Clothing1M release directory (key lists, label files, "
                    "images/).")
flags.DEFINE_string("cache_dir", None, "Where decoded images are cached (default ~/.cache/gdw_tf; "
                    "folder, cifar and tfds: datasets).")
flags.DEFINE_bool("skip_bad_images", False, "clothing1m: leave images that cannot be decoded out "
                  "of the prepared dataset (counted and listed in data_summary.json) instead of "
                  "failing.")
flags.DEFINE_string("labels", None, "folder: CSV of training labels, header "
                    "path,label[,true_label], path relative to ROOT/train (any layout), label a "
                    "class name or its position in the sorted class list; the classes are the "
                    "class folders of ROOT/test and "
                    "ROOT/meta. Overrides the folder names; true_label gives the truth for the "
                    "diagnostics. Errors name FILE:line.")
flags.DEFINE_enum("labels_missing", "error", ["error", "skip"], "folder with --labels: a "
                  "training image without a row is an error, or skipped (counted in "
                  "data_summary.json).")
flags.DEFINE_enum("noise_type", None, list(NOISE_TYPES), "Synthetic label noise: uniform (redrawn "
                  "uniformly), flip (to one fixed other class per class), instance (Xia et al. "
                  "2020: per-image flip rate ~ N(noise_rate, 0.1^2) truncated to [0, 1], target "
                  f"chosen from the image). Default per dataset: {per_dataset('noise_type')}; "
                  "none for tfds: datasets and a folder with ROOT/meta or --labels (their labels "
                  "are taken as they are).")
flags.DEFINE_float("noise_rate", None, "Label noise ratio r in [0, 1]. Default: "
                   f"{SYNTHETIC_NOISE_RATE:g} with synthetic noise, else 0.")
flags.DEFINE_float("imbalance_factor", 1.0, "Long-tail factor mu in (0, 1]: smallest / largest "
                   "class.")
flags.DEFINE_integer("num_meta", None, "Clean meta examples (class-balanced). Default per "
                     "dataset.")
flags.DEFINE_enum("meta_source", "given", ["given", "truth", "auto"], "Where the meta set comes "
                  "from. given: the dataset's clean meta set (held out of the training split "
                  "before any noise, or the release's clean split). truth: hold out a clean meta "
                  "set of --num_meta training images chosen by their TRUE label (a --labels "
                  "file's true_label column, a tfds: dataset's --true_label_key), class-"
                  "balanced, labelled with it; images whose truth is unknown are never chosen, and "
                  "--train_per_class then caps the rest per given label. auto: no clean set; after "
                  "a warm-up of plain training the --num_meta / C smallest-loss training "
                  "examples of each class are the meta set, chosen again every "
                  "--meta_refresh_epochs (bi-level methods, every dataset; a release's own clean "
                  "split is then not used; gdw_tf.auto_meta).")
flags.DEFINE_integer("meta_warmup_epochs", None, "--meta_source=auto: epochs of plain training "
                     "before the first choice (default: a tenth of --epochs, at least 1).")
flags.DEFINE_integer("meta_refresh_epochs", None, "--meta_source=auto: epochs between choices "
                     "(default: --meta_warmup_epochs).")
flags.DEFINE_integer("train_per_class", None, "Keep at most this many training examples per class "
                     "(after the meta split; CPU-sized protocols). Default: all.")
flags.DEFINE_string("augment", None, "Augmentation recipe (cifar, flip, imagenet, none). "
                    "Default per dataset.")

# Method and model.
flags.DEFINE_string("method", "gdw", "Training method, see gdw_tf.methods.available_methods().")
flags.DEFINE_multi_string("method_option", [], "A method option as key=value (repeatable), for "
                          "the options without a flag of their own; see the method's docstring.")
flags.DEFINE_string("model", None, "Backbone: resnet32, resnet18, small_cnn, ..., or keras:NAME "
                    "for any keras.applications constructor (keras:EfficientNetV2B0), or "
                    "keras_hub:PRESET (a KerasHub preset directory, or a preset kagglehub has "
                    "cached; needs keras-hub). Default per "
                    f"dataset: {per_dataset('model')}.")
flags.DEFINE_string("init_weights", None, "Local weights file for the backbone (.weights.h5, "
                    ".keras or torchvision .npz); 'imagenet' for keras:NAME (Keras' cached file, "
                    "never downloaded); or 'none' to train from scratch where the setting expects "
                    "pretrained weights.")
flags.DEFINE_bool("freeze_backbone", False, "Train only the classifier head (linear probe); the "
                  "backbone, its BatchNorm statistics included, stays as initialised.")

# Optimisation (reference defaults: docs/algorithm.md).
flags.DEFINE_integer("epochs", None, "Training epochs. Default per dataset: "
                     f"{per_dataset('epochs')}.")
flags.DEFINE_integer("batch_size", 100, "GLOBAL batch size (split across replicas).")
flags.DEFINE_integer("meta_batch_size", None, "GLOBAL meta batch size (default: batch_size).")
flags.DEFINE_float("lr", None, "Initial learning rate of the classifier's SGD (also the virtual "
                   f"step's). Default per dataset: {per_dataset('lr')}; {FINE_TUNE_LR:g} for "
                   "keras:NAME with --init_weights and for keras_hub:PRESET.")
flags.DEFINE_enum("schedule", "cosine", ["cosine", "constant"], "Per-epoch cosine decay, or "
                  "constant.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay added to the gradient.")

# Method options, named as the method's constructor parameters. Unset (None), the method's
# own default applies; setting one the --method does not take is an error (gdw_tf.config).
flags.DEFINE_float("outer_lr", None, "gdw: step size on the class-level weights "
                   "(default 100; 1000 with --dataset=cifar100, as the reference).")
flags.DEFINE_float("clip", None, "gdw: clip on the class-level weight step (default 0.2).")
flags.DEFINE_float("meta_learning_rate", None, "mwnet, gdw: Adam learning rate of the weighting "
                   "network (default 1e-3).")
flags.DEFINE_float("meta_weight_decay", None, "mwnet, gdw: L2 weight decay of the weighting "
                   "network (default 1e-4).")
flags.DEFINE_integer("hidden_units", None, "mwnet, gdw: hidden width of the weighting network "
                     "(default 100).")
METHOD_FLAGS = ("outer_lr", "clip", "meta_learning_rate", "meta_weight_decay", "hidden_units")

# Scale and run.
flags.DEFINE_enum("strategy", "default",
                  ["default", "one_device", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_integer("num_cpu_devices", 1, "Split the CPU into this many logical devices "
                     "(testing mirrored).")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
flags.DEFINE_bool("mixed_precision", False, "Compute in bfloat16 (weights and losses stay "
                  "float32).")
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA (turns off the "
                  "step's runtime input checks; slower on CPU).")
flags.DEFINE_integer("seed", 0, "Seed of the data protocol and of the initialisation.")
flags.DEFINE_string("output_dir", None, "Checkpoints, logs, results.json and figures (resumes if "
                    "present).")
flags.DEFINE_integer("verbose", 2, "0 silent, 1 Keras' progress bar, 2 one short line per epoch "
                     "(every metric goes to log.csv and TensorBoard).")
flags.DEFINE_enum("resume", "auto", ["auto", "force"],
                  "auto: resume --output_dir only if its run had the same flags (else an error "
                  "lists the differences); force: resume it even with other flags.")
flags.DEFINE_integer("checkpoint_steps", 0, "Also checkpoint every N training steps (0: at epoch "
                     "ends only); a killed run then loses at most N steps.")
flags.DEFINE_bool("deterministic", False, "Deterministic TensorFlow ops, one thread, no oneDNN: "
                  "a killed and resumed run ends bit for bit as an uninterrupted one (slower).")
flags.DEFINE_bool("traceback", False, "Show the Python traceback of user errors (bad flags, "
                  "files or data) instead of their one-line message.")


def _check(name, predicate, requirement):
    flags.register_validator(name, predicate, message=f"--{name} {requirement}")


_check("noise_rate", lambda v: v is None or 0.0 <= v <= 1.0, "must be in [0, 1]")
_check("imbalance_factor", lambda v: 0.0 < v <= 1.0, "must be in (0, 1]")
_check("num_meta", lambda v: v is None or v >= 0, "must be >= 0")
_check("image_size", lambda v: v is None or v >= 1, "must be >= 1")
_check("epochs", lambda v: v is None or v >= 1, "must be >= 1")
_check("verbose", lambda v: v in (0, 1, 2), "must be 0, 1 or 2")
_check("batch_size", lambda v: v >= 1, "must be >= 1")
_check("meta_batch_size", lambda v: v is None or v >= 1, "must be >= 1")
_check("lr", lambda v: v is None or v > 0, "must be > 0")
_check("momentum", lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")
_check("weight_decay", lambda v: v >= 0, "must be >= 0")
_check("outer_lr", lambda v: v is None or v > 0, "must be > 0")
_check("clip", lambda v: v is None or v > 0, "must be > 0")
_check("meta_learning_rate", lambda v: v is None or v > 0, "must be > 0")
_check("meta_weight_decay", lambda v: v is None or v >= 0, "must be >= 0")
_check("hidden_units", lambda v: v is None or v >= 1, "must be >= 1")
_check("checkpoint_steps", lambda v: v >= 0, "must be >= 0")
_check("num_cpu_devices", lambda v: v >= 1, "must be >= 1")
_check("method_option", lambda v: all("=" in item for item in v), "items must look like key=value")
