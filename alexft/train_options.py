"""The options of a fine-tuning run: one record, checked once, written as the run's config.json.

The defaults follow Caffe's fine-tuning recipe for bvlc_alexnet (SGD with momentum 0.9,
weight decay 5e-4 on kernels, biases at 2x the rate, fresh layers at 10x, the rate cut to a
tenth for the last third of the epochs), except two defaults that adapt to the run:
- the base rate, "auto": measured with a learning-rate range test (alexft/lr_finder.py); a
  number keeps Caffe's recipe exactly. With a measured rate the kernels' weight decay follows
  it (`decay_for_rate`), so that rate x decay, the share of the weights each step takes away,
  stays Caffe's (0.001 x 5e-4), and the biases keep Caffe's rate (`bias_factor_for_rate`);
- the epochs, "auto": 10 on images; on the feature cache, where an epoch costs milliseconds,
  enough epochs for AUTO_STEPS optimizer steps (between 10 and AUTO_MAX_EPOCHS). Ten epochs of a
  600-image folder are only 100 steps: fc8 on the cache then stops 15-20 points short of what
  a linear classifier on the same features reaches (docs/training.md, the matrix).
"""
import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Optional, Union

from . import architecture as arch
from .option_rules import Flag, OneOf, OptionsError, OptionTypeError, Range, checked  # noqa: F401  (re-exported)

WEIGHT_DECAY = 5e-4
FRESH_LR_MULTIPLIER = 10.0
BIAS_LR_MULTIPLIER = 2.0
AUTO_EPOCHS = 10
AUTO_STEPS = 1000
AUTO_MAX_EPOCHS = 200
CAFFE_BASE_LR = 0.001  # the rate Caffe's fine-tuning recipe pairs with its decay of 5e-4


MAX_SEED = 2**31 - 1  # numpy takes no negative seed, TensorFlow's ops none past 64 bits: one range for all


@dataclass
class TrainOptions:
    """How to fine-tune. Every field is plain JSON, so the record is also config.json.

    `skip`: layers not loaded from the weights file (fresh init). `train`: layers that learn,
    "all", or None for the skipped ones. `lr`: "auto" or the base rate. `mixed_precision`:
    None (on for GPUs, off for CPUs), True, False, "float16" or "bfloat16". `weight_decay`: the
    kernels' L2 decay; with `lr="auto"` it is the decay at Caffe's rate and follows the rate the
    range test measures (`decay_for_rate`).
    """

    skip: list = field(default_factory=lambda: ["fc8"])
    train: Optional[Union[list, str]] = None
    epochs: Union[int, str] = "auto"
    batch_size: int = 64
    lr: Union[str, float] = "auto"
    val_dir: Optional[str] = None
    val_split: float = 0.1
    ten_crop_val: bool = False
    seed: int = 0
    device: str = "auto"
    strategy: str = "auto"
    heartbeat_timeout: Optional[float] = None  # multi-worker: seconds of silence before a worker counts as lost
    mixed_precision: Optional[Union[bool, str]] = None
    cache: bool = True
    momentum: float = 0.9
    weight_decay: float = WEIGHT_DECAY
    fresh_lr_multiplier: float = FRESH_LR_MULTIPLIER
    bias_lr_multiplier: float = BIAS_LR_MULTIPLIER
    dropout: float = 0.5
    max_broken: float = 0.1
    max_recoveries: int = 3
    keep_last: bool = False
    keep_checkpoint: bool = False

    # Options that must match when a run is resumed; the others (epochs, lr, devices, what
    # is kept at the end) may change between sessions of one run.
    IDENTITY = ("skip", "train", "batch_size", "momentum", "weight_decay", "fresh_lr_multiplier",
                "bias_lr_multiplier", "dropout", "seed", "cache", "val_split", "ten_crop_val")

    def __post_init__(self):
        self.skip = layer_list(self.skip)
        self.skip = list(arch.LAYER_NAMES) if self.skip == ["all"] else list(dict.fromkeys(self.skip))
        if self.train is not None:
            self.train = layer_list(self.train)
            self.train = list(arch.LAYER_NAMES) if self.train == ["all"] else self.train
        if self.val_dir is not None:
            self.val_dir = str(self.val_dir)
        self.lr = parse_rate(self.lr)
        self.epochs = parse_epochs(self.epochs)
        self.batch_size = _whole_number(self.batch_size, "batch_size")
        self.device = parse_device(self.device)
        if self.mixed_precision not in (None, True, False, "float16", "bfloat16"):  # before the listing and the weights
            raise OptionsError(f"mixed_precision {self.mixed_precision!r}: expected True, False, None, 'float16' or "
                               "'bfloat16'")
        self.val_split = parse_share(self.val_split, "val_split")
        self.dropout = parse_share(self.dropout, "dropout")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or not 0 <= self.seed <= MAX_SEED:
            wrong_kind = isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
            raise (OptionTypeError if wrong_kind else OptionsError)(
                f"seed must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}")
        self.seed = int(self.seed)  # (numpy's integers are not JSON: config.json could not be written)
        for name, rule in FIELD_RULES.items():
            setattr(self, name, checked(getattr(self, name), name, rule))

    @property
    def auto_lr(self):
        return self.lr == "auto"

    def planned_epochs(self, train_count, cached):
        """The number of epochs, and for "auto" why that many."""
        if self.epochs != "auto":
            return self.epochs, None
        if not cached:
            return AUTO_EPOCHS, "auto: 10 on images"
        steps_per_epoch = max(math.ceil(train_count / self.batch_size), 1)
        wanted = math.ceil(AUTO_STEPS / steps_per_epoch)  # the fewest epochs that give AUTO_STEPS steps
        epochs = min(max(wanted, AUTO_EPOCHS), AUTO_MAX_EPOCHS)
        steps = f"{epochs * steps_per_epoch} steps of {self.batch_size} on the feature cache"
        if wanted > AUTO_MAX_EPOCHS:
            return epochs, f"auto: {steps}, the most it runs; {AUTO_STEPS} steps would take {wanted} epochs"
        if wanted < AUTO_EPOCHS:
            return epochs, f"auto: {steps}, the fewest epochs it runs"
        return epochs, f"auto: {steps}, the fewest epochs that give {AUTO_STEPS}"

    def as_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values):
        """The record from config.json (facts about the run stored beside it are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


def decay_for_rate(weight_decay, measured_rate):
    """The kernels' weight decay to use with a measured base rate: `weight_decay` x 0.001 / rate.

    Features s times larger make the right weights s times smaller; SGD then takes the same
    path in function space with the rate divided by s^2 and the decay multiplied by s^2 (write
    W' = s W into the update: rate and decay trade places, their product stays). The range
    test finds the rate's share of that; scaling the decay the other way keeps their product,
    the fraction of the weights each step's decay takes away, at Caffe's. A fixed 5e-4 at a
    measured rate 300x Caffe's held fc8 weights far below where features 20x smaller need
    them: 15 points under a linear probe on the digits, against 4 with the decay following
    (docs/training.md).
    """
    if measured_rate is None:
        return weight_decay
    return weight_decay * CAFFE_BASE_LR / measured_rate


def bias_factor_for_rate(measured_rate):
    """The factor on the biases' rate multipliers with a measured base rate: 0.001 / rate, so
    that biases learn at Caffe's own rate (0.001 x 2, x10 in fresh layers) whatever the kernels'.

    A bias's gradient does not scale with the features (for fc8 it is the softmax's error), so
    the rate the range test measures for the kernels, 50-1000x Caffe's when the features are
    small, would throw the biases about (and, moving with the sweep, they set its edge). At
    features 20x smaller on the photo crops fc8 ended at 58.3% with the biases at the measured
    rate, 67.8% at Caffe's, held still during the test (at x1: 66.7%; the probe: 69.4%).
    """
    if measured_rate is None:
        return 1.0
    return CAFFE_BASE_LR / measured_rate


def check_layers(skip, train, default_skip=False):
    """The layer choice's mistakes that need no weights, as sorted (skip, train): unknown
    names, nothing to train, a layer started afresh (skipped) but left untrained. `train`
    None: the skipped layers; `default_skip`: the user never typed --skip. Raises OptionsError."""
    if train is not None and not list(train):
        raise OptionsError("--train names no layer; give layers such as fc8, fc7,fc8, conv5-fc8 or all")
    for option, names in (("--skip", skip), ("--train", train or [])):  # (train None: the skipped layers)
        _refuse_unknown_layers(option, names)
    train = list(skip) if train is None else list(train)
    if not train:
        raise OptionsError("no layer to train: pass --skip fc8 or --train LAYERS")
    frozen_fresh = [name for name in skip if name not in train]
    if frozen_fresh:
        why = ", the default," if frozen_fresh == ["fc8"] and default_skip else ""
        raise OptionsError(f"--skip {','.join(frozen_fresh)}{why} starts {' and '.join(frozen_fresh)} afresh, and "
                           f"without training it would leave it random: train it too "
                           f"(--train {','.join(sorted(set(train) | set(frozen_fresh), key=arch.LAYER_NAMES.index))})")
    order = arch.LAYER_NAMES.index
    return sorted(skip, key=order), sorted(set(train), key=order)


def _refuse_unknown_layers(option, names):
    unknown = sorted(set(names) - set(arch.LAYER_NAMES))
    if unknown:
        guesses = difflib.get_close_matches(unknown[0].lower(), arch.LAYER_NAMES, n=1, cutoff=0.6)
        guess = f" (did you mean {guesses[0]}?)" if len(unknown) == 1 and guesses else ""
        raise OptionsError(f"{option}: unknown layer(s) {', '.join(unknown)}{guess}; AlexNet has "
                           f"{', '.join(arch.LAYER_NAMES)} (a range: conv5-fc8; every layer: all)")


def layer_list(value):
    """Layer names as a list, from a list or from the command line's "fc7,fc8" (a plain string
    must not become its letters), in any case; a range "conv5-fc8" is the layers from conv5 to
    fc8; None and "" are no layers. "all" (every layer) stands alone."""
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    layers = []
    for name in (str(name).strip().lower() for name in names):
        if name:
            layers += _layer_range(name)
    if "all" in layers and len(layers) > 1:
        raise OptionsError(f"'all' stands alone (every layer), not in a list ({','.join(layers)})")
    return layers


def _layer_range(name):
    """"conv5-fc8" as [conv5, fc6, fc7, fc8]; anything else (a name, an unknown range) as
    itself, checked later. A reversed range is refused here, naming the order meant."""
    first, _, last = name.partition("-")
    order = arch.LAYER_NAMES
    if first not in order or last not in order:
        return [name]
    if order.index(first) > order.index(last):
        raise OptionsError(f"layer range {name!r} runs backwards: ranges go from input to output, as in {last}-{first}")
    return list(order[order.index(first):order.index(last) + 1])


def _whole_number(value, name, also=""):
    """A whole number of at least 1, from an int or its digits ("16"); `also` names the other
    values the caller accepts, for the message. A value of another kind (2.5, True, a list) is
    also a TypeError, as Python's `range(2.5)` and Keras' `fit(epochs=2.5)` have it."""
    said = f"{name} {value!r}: expected a whole number of at least 1{also}"
    if not isinstance(value, str) and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise OptionTypeError(said)
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        raise OptionsError(said) from None
    if number < 1:
        raise OptionsError(said)
    return int(number)


def parse_share(value, name):
    """A share in [0, 1), from a number or its digits ("0.2"), as the counts take theirs."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not 0 <= number < 1:
        raise OptionsError(f"{name} must be a number in [0, 1), got {value!r}")
    return number if type(number) in (int, float) else float(number)  # (as given; numpy's are not JSON)


STRATEGIES = ("auto", "one", "mirrored", "multiworker")
HEARTBEAT_SECONDS = Range(1, unit="seconds", none=True)  # the agent heartbeats every half timeout: less would spin

# The fields checked by rule; the ranges are the command line's where it has the option, else
# Caffe's meaning: momentum 1 would never forget a gradient, a negative decay grows the weights,
# a fresh layer at rate 0 stays random (as an untrained skipped layer, check_layers), biases at
# rate 0 are held (Caffe's lr_mult: 0).
FIELD_RULES = {
    "ten_crop_val": Flag(), "cache": Flag(), "keep_last": Flag(), "keep_checkpoint": Flag(),
    "momentum": Range(0, 1, high_open=True),
    "weight_decay": Range(0),
    "fresh_lr_multiplier": Range(0, low_open=True),
    "bias_lr_multiplier": Range(0),
    "max_broken": Range(0, 1),
    "max_recoveries": Range(0, whole=True),
    "heartbeat_timeout": HEARTBEAT_SECONDS,
    "strategy": OneOf(STRATEGIES),
}


def parse_epochs(value):
    """"auto" or a whole number of at least 1."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return _whole_number(value, "epochs", also=" or 'auto'")


def parse_rate(value):
    """"auto" or a positive finite float."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = float(value)
        except ValueError:
            raise OptionsError(f"learning rate {value!r}: expected a positive number or 'auto'") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise OptionsError(f"learning rate {value!r}: expected a positive number or 'auto'")
    return float(value)


def parse_device(value):
    """auto, cpu, gpu or gpu:N (any case), checked before TensorFlow starts; whether that GPU
    exists is for `devices.resolve_device` to say."""
    name = str(value).strip().lower()
    kind, colon, number = name.partition(":")
    if name in ("auto", "cpu", "gpu") or (kind == "gpu" and colon and number.isdigit()):
        return name
    raise OptionsError(f"device {value!r}: expected auto, cpu, gpu or gpu:N")


CACHE_POINTS = {"fc6": "pool5", "fc7": "fc6", "fc8": "fc7"}  # first trained layer -> cached output


def cache_matters(saved, config):
    """Whether --cache/--no-cache changes anything between a run's saved settings and new ones:
    not when both train a convolution (they train on images either way). Layers not given are
    the skipped ones (fc8 by default)."""
    def first_trained(settings):
        return (settings.get("train") or settings.get("skip") or ["fc8"])[0]

    return any(CACHE_POINTS.get(first_trained(settings)) for settings in (saved, config))


def cache_point(options):
    """The layer whose output is cached, or None when training reaches below fc6."""
    return CACHE_POINTS.get(options.train[0]) if options.cache else None


# The options' names as the command line spells them (the Python keywords are the same words
# with underscores); keys without an option (momentum, ...) are the Python API's only.
OPTION_NAMES = {"skip": "--skip", "train": "--train", "batch_size": "--batch-size", "dropout": "--dropout",
                "seed": "--seed", "val_split": "--val-split", "ten_crop_val": "--ten-crop",
                "class_names": "classes"}


# Options given as a pair of flags: a change names the flags themselves.
FLAG_PAIRS = {"cache": ("--cache", "--no-cache")}


def option_change(key, saved, config):
    """A change between a run's saved config and this one, as the options name it and take
    their values (`--batch-size: was 16, now 64`, `--train: was fc8, now fc7,fc8`,
    `--cache/--no-cache: was --cache, now --no-cache`), or None for a key without an option."""
    if key in FLAG_PAIRS:
        on, off = FLAG_PAIRS[key]
        return f"{on}/{off}: was {on if saved.get(key) else off}, now {on if config.get(key) else off}"
    if key not in OPTION_NAMES:
        return None
    return f"{OPTION_NAMES[key]}: was {_as_option_value(saved.get(key))}, now {_as_option_value(config.get(key))}"


def _as_option_value(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "none"
    return str(value)
