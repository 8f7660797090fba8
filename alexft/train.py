"""Fine-tuning's entry point: `finetune` checks the options, the folders and the weights, plans
the run and hands it to `trainer` (the range test, the epochs, recovery, checkpoints). Nothing
here imports TensorFlow, so a mistake is said at once, not after its seconds of start-up.

The other parts live beside it, each with one job: `train_options` (the options record, also
config.json), `train_setup` (the checks and choices before the first step), `train_network`
(the network, optimizer and one step), `train_data` (what feeds it), `lr_finder` (the
learning-rate range test), `recovery` (when training went wrong) and `run_folder` (what is
written where, and when).
"""
import os
import signal
import sys
import threading
from pathlib import Path

from . import interrupts, train_setup
from . import weights as weights_io
from .data import Dataset, load_dataset
# (TrainingError is re-exported: the command line takes it from here)
from .errors import WARNING, AlexftError, TrainingError, TrainingInterrupted, warn_user, warnings_heard  # noqa: F401
from .python_words import FINETUNE_KEYWORDS, in_python_words, said_in_python_words
from .progress import beside_bars
from .run_folder import RunFolder
from .weights.sources import names_the_defaults, resolve_weights
from .option_rules import Flag, Function, Range, checked
from .train_options import TrainOptions, check_layers


# finetune's own keywords, checked as the options record checks its fields: before the listing
# (log="train.log" failed seconds into it, as "'str' object is not callable"); resume="no" is
# truthy, and would continue a run asked not to.
KEYWORD_RULES = {"resume": Flag(), "progress": Flag(none=True), "log": Function("each line of the run's log"),
                 "cache_memory": Range(0, unit="bytes")}

def finetune(data_dir=None, options=None, *, weights=None, output=None, resume=False, cache_memory=2 << 30,
             progress=None, log=None, dataset=None, **fields):
    """Fine-tune AlexNet on DATA_DIR/<class>/<images>; return a summary dict.

    `options`: a TrainOptions record; keyword `fields` of TrainOptions build one (or change
    the given one). `weights`: a file (None: the default sources), or a WeightSet already read
    with this run's `skip`. Everything is written to the run folder `output` (default
    runs/<timestamp>); `resume=True` continues the run there as it was begun (DATA_DIR, the
    weights and the options not given are the run's own, from its config.json), and may change
    `epochs`, `lr` and the devices. docs/data.md lists what the folder holds. `dataset`: a `load_dataset`
    result, trained on as listed: its folder is DATA_DIR (which may be left out, or the dataset
    given in its place) and its val_dir, val_split and seed are the run's (others given are
    refused). Ctrl-C raises TrainingInterrupted, also before the first epoch (see there for SIGTERM).
    `log`: called with each line of the run's log (default: printed on stderr, and its warnings
    raised as AlexftWarning). The summary's "warnings" lists what the run warned of. Messages name
    these keywords (`resume=True, output=RUN`), not the command line's flags.
    """
    told = log or _said_to_a_python_caller
    for name, value, also in (("data_dir", data_dir, (Dataset,)), ("output", output, ())):  # not Python's "expected str"
        if value is not None and not isinstance(value, (str, os.PathLike, *also)):
            raise TypeError(f"finetune()'s {name} is a folder's path (str or pathlib.Path), not "
                            f"{type(value).__name__} {value!r}")
    for name, value in dict(resume=resume, progress=progress, log=log, cache_memory=cache_memory).items():
        checked(value, f"finetune()'s {name}", KEYWORD_RULES[name])
    with said_in_python_words(FINETUNE_KEYWORDS):
        if isinstance(data_dir, Dataset) and dataset is None:  # finetune(load_dataset(...))
            data_dir, dataset = None, data_dir
        if dataset is not None:
            data_dir, fields = train_setup.as_listed(dataset, data_dir, options, fields)
        if resume and dataset is None and (options is None or isinstance(options, TrainOptions)):
            given = dict(options.as_dict() if options else {}, **fields)
            try:
                data_dir, weights, resumed, saved = train_setup.resumed_settings(
                    output, data_dir, weights, given, log=lambda message: told(in_python_words(message)))
            except train_setup.RunAlreadyFinished as done:
                return done.summary
            if fields.get("epochs") == "auto" and saved.get("epochs") is not None:  # as the command line notes it
                told(f"note: epochs='auto' keeps a resumed run's {saved['epochs']} epochs: give a number to change them")
            fields = resumed
            options = None
        elif data_dir is None:
            raise TypeError("finetune() needs data_dir, the folder of <class>/<images> (or resume=True, output=RUN)")
        try:
            summary = finetune_as_command(data_dir, options, weights=weights, output=output, resume=resume,
                                          cache_memory=cache_memory, progress=progress, dataset=dataset,
                                          log=lambda message: told(in_python_words(message)), **fields)
        except TrainingInterrupted:
            interrupts.end_uncaught_stops_by_their_signal()  # left uncaught, it ends a script as Ctrl-C does
            raise
        if "warnings" in summary:  # (a finished run's summary.json from before they were kept has none)
            summary["warnings"] = [in_python_words(warning) for warning in summary["warnings"]]
        return summary


def _said_to_a_python_caller(message):
    """finetune's log when the caller gave none: a warning is an AlexftWarning, which Python's
    filters and pytest see; the rest is printed on stderr."""
    if message.startswith(WARNING):
        warn_user(message[len(WARNING):])
    else:
        say(message)



class KeptWarnings:
    """The run's log, keeping the warnings it says for summary.json and --json: a script reading
    the result learns that nothing was learned, or that images were left out or damaged, as a
    user reading stderr does. `heard` keeps those said elsewhere (the listing, decoding)."""

    def __init__(self, log):
        self.log, self.said, self._kept = log, [], set()  # (the set: a run of thousands of damaged JPEGs)
        self._lock, self._passing = threading.Lock(), threading.local()

    def __call__(self, message):
        if message.startswith(WARNING):
            self.heard(message[len(WARNING):])
        self._passing.on = True  # a Python caller's log raises its warnings, in its words: not heard again
        try:
            self.log(message)
        finally:
            self._passing.on = False

    def heard(self, message):
        with self._lock:  # (decoding threads say theirs at the same time)
            if not getattr(self._passing, "on", False) and message not in self._kept:
                self._kept.add(message)
                self.said.append(message)


def finetune_as_command(data_dir, options=None, *, weights=None, output=None, resume=False, cache_memory=2 << 30,
                        progress=None, log=None, dataset=None, **fields):
    """finetune for the command line: its log and its errors name the command's flags."""
    try:
        return _finetune(data_dir, options, weights=weights, output=output, resume=resume, cache_memory=cache_memory,
                         progress=progress, log=log, dataset=dataset, **fields)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt as stop:  # before the run folder was touched: one exception to catch, however early
        raise _interrupted(stop, resume, kept=Path(output) if resume and output is not None else None) from None


def _finetune(data_dir, options=None, *, weights=None, output=None, resume=False, cache_memory=2 << 30,
              progress=None, log=None, dataset=None, **fields):
    """finetune's work; Ctrl-C here is turned into TrainingInterrupted by finetune."""
    if options is not None and not isinstance(options, TrainOptions):  # e.g. finetune("photos/", "fc8")
        raise TypeError(f"finetune's second argument is a TrainOptions record, not {type(options).__name__} "
                        f"{options!r}; give the options by name, e.g. finetune(data_dir, train=['fc8'], epochs=5)")
    _refuse_unknown_options(fields)
    options = options.replace(**fields) if options else TrainOptions(**fields)
    if options.train is not None or options.skip:  # an unknown or untrainable layer, said before the listing
        check_layers(options.skip, options.train, default_skip=options.skip == ["fc8"])
    log = KeptWarnings(log or say)
    chief = train_setup.check_cluster(options, output, log)
    output = Path(output) if output is not None else RunFolder.default_path()
    run = RunFolder(output, chief)
    if not resume:  # before the listing and the weights; outside the try below: a folder refused is the user's
        run.refuse_inside(data_dir, options.val_dir)
        run.refuse_existing()
    if names_the_defaults(weights):  # found or downloaded once the images are known to be there, as None
        weights = None
    if weights is not None and not isinstance(weights, weights_io.WeightSet):  # (a WeightSet: the command line's)
        weights = resolve_weights(weights, progress=progress)  # a file given is checked before the listing
    dataset = dataset or load_dataset(data_dir, val_dir=options.val_dir, val_split=options.val_split, seed=options.seed)
    for said in dataset.warnings:  # (the command line lists the folder before it calls this)
        log.heard(said)
    train_setup.report_split(dataset, options, log)
    if weights is None:  # found or downloaded once the images are known to be there
        weights = resolve_weights(None, progress=progress)
    options, weight_set, config = train_setup.planned_run(data_dir, options, dataset, weights, log)
    config["versions"] = train_setup.versions()
    try:
        if resume:
            run.claim()
            earlier, finished = train_setup.resume_point(run, config, options, log)
            if finished:
                return finished
            train_setup.say_other_weights_file(earlier, config, log)
            config.update(lr_found=earlier.get("lr_found"), lr_measured=earlier.get("lr_measured"),
                          lr=earlier["lr"] if options.auto_lr else options.lr)
            if not run.checkpoint.exists():
                log(f"{run.path} holds no checkpoint (the run stopped before one was written whole): training starts again "
                    "from epoch 1")
            run.write_config(config)
        else:
            run.start(config)
            run.write_val_list(dataset, data_dir)
        from .trainer import Trainer  # (TensorFlow's seconds of import: after every check above)
        from .traced_gradients import custom_gradients_released

        with custom_gradients_released(), warnings_heard(log.heard):  # (released: else each run's graphs stay in memory)
            return Trainer(options, config, dataset, weight_set, run, cache_memory, progress, log).fit()
    except BaseException as error:
        discarded = run.claimed and not resume and not run.checkpoint.exists() and not run.model.exists()
        if discarded:
            # Refused (device, precision...), failed or stopped (Ctrl-C while caching features)
            # before epoch 1 ended: nothing a fresh start would trip on stays.
            run.discard_fresh()
        if isinstance(error, KeyboardInterrupt) and not isinstance(error, TrainingInterrupted):
            # Not by the epochs' own signal handling (caching, the range test, a callback's
            # KeyboardInterrupt): said as what is left on disk.
            found = config.get("lr_found") if config.get("lr_measured") else None  # (not Caffe's fallback)
            raise _interrupted(error, resume, run, discarded, found=found) from None
        raise
    finally:
        run.release()


# Keras' (and PyTorch's) words for finetune's options, which spelling alone does not find.
KERAS_NAMES = {"learning_rate": "lr", "validation_split": "val_split", "validation_dir": "val_dir",
               "validation_data": "val_dir", "shuffle_seed": "seed", "dropout_rate": "dropout"}


def _refuse_unknown_options(fields):
    """A mistyped option is named as finetune's, with the option it may have meant."""
    import dataclasses
    import difflib

    known = [field.name for field in dataclasses.fields(TrainOptions)]
    for name in fields:
        if name in ("verbose", "quiet", "silent"):  # Keras' verbose=0: two keywords here
            raise TypeError(f"finetune() got an unexpected keyword argument {name!r}; progress=False hides the "
                            "progress bars, and log=lambda line: None the log's lines")
        if name not in known:
            close = [KERAS_NAMES[name]] if name in KERAS_NAMES else difflib.get_close_matches(name, known + OWN_KEYWORDS, n=1)
            raise TypeError(f"finetune() got an unexpected keyword argument {name!r}"
                            + (f"; did you mean {close[0]!r}?" if close else
                               f"; its options: {', '.join(known)}; and its own: {', '.join(OWN_KEYWORDS)}"))


OWN_KEYWORDS = ["weights", "output", "resume", "progress", "log", "cache_memory", "dataset"]  # finetune's, not the record's


def _interrupted(stop, resume, run=None, discarded=False, kept=None, found=None):
    """A bare KeyboardInterrupt (or the command line's SIGTERM) as TrainingInterrupted, saying
    what is on disk: `run` is None when it came before the run folder was touched (`kept`: the
    folder a resume left as it was); `found`: the rate a range test chose, which a discarded
    run would otherwise lose (its minute or so of steps)."""
    number = getattr(stop, "signal_number", signal.SIGINT)
    how = "terminated" if number == signal.SIGTERM else "interrupted"
    if run is None:
        return interrupts.before_training(number, resume, kept)
    if discarded:
        said = f"{how} before the first epoch ended; " + (
            f"what the run wrote in {run.path} was removed" if run.path.exists() else "no run folder was kept") + (
            f"; the range test had chosen base rate {found:.3g}: --lr {found:.3g} starts at it without the test (with "
            "Caffe's weight decay and bias rates, which --lr auto scales to the rate it measures)"
            if found is not None else "")
    elif run.checkpoint.exists():
        said = (f"stopped by {interrupts.signal_name(number)}" + ("; model.npz holds the best epoch so far" if run.model.exists() else "")
                + f"; continue with --resume --output {run.path}")
    else:  # an epoch's model.npz was written, then the stop came before its checkpoint
        said = (f"{how} before the first checkpoint was written; the run folder {run.path} is kept"
                + (" with model.npz" if run.model.exists() else "") + ", and --resume there starts again from epoch 1")
    if not discarded:
        kept = run.path
    return TrainingInterrupted(said, number, kept)


def say(message):
    """One line on stderr in one write: decoding threads say "skipped: ..." at the same time
    (print's separate newline let two lines run together), and clear of a progress bar. The
    command line's log. A newline in a file's name is a space, as in the errors: a log read
    line by line (grep) keeps each note whole."""
    line = message.replace("\r", " ").replace("\n", " ")  # (not one_line: an aligned log keeps its spaces)
    with beside_bars(sys.stderr):
        sys.stderr.write(f"alexft: {line}\n")
        sys.stderr.flush()
