"""One fine-tuning run once it is checked and planned (`train.finetune`): the range test, the
epochs with recovery, the checkpoints and the verdicts at the end. It imports TensorFlow, which
`train` leaves until every check of the user's options, folders and weights has passed.
"""
import itertools
import math
import signal
import threading
import time

import numpy as np
import tensorflow as tf

from . import interrupts, lr_finder, recovery
from . import weights as weights_io
from .data import BrokenFiles
from .epoch_log import EpochLog
from .feature_store import store_folder
from .errors import WARNING, AlexftError, TrainingError, TrainingInterrupted
from .features import VIEWS
from .plots import range_test_curve
from .progress import progress_bar
from .recovery import Diverged, LossWatch
from .train_data import TrainingData, unread_classes_said
from .train_network import LostWorker, TrainingNetwork
from .train_options import CAFFE_BASE_LR, bias_factor_for_rate, cache_point, decay_for_rate

CLIMB_SHARE = 2.0  # a last epoch's loss over this times the lowest epoch's (and a guess's): steps too large
CHANCE_LOSS_SHARE = 0.97  # a best training loss at least this share of ln(classes) learned nothing


def _precision_name(policy):
    """"mixed_bfloat16" as the log says it, "bfloat16 mixed"; "float32" as it is."""
    return f"{policy[len('mixed_'):]} mixed" if policy.startswith("mixed_") else policy


def scheduled_rate(base_rate, epoch, epochs):
    """Caffe-style step schedule: the base rate, a tenth of it for the last third of the epochs."""
    return base_rate * (0.1 if epoch >= math.ceil(2 * epochs / 3) and epochs >= 3 else 1.0)


def epoch_score(row):
    """Higher is better: validation accuracy, ties (frequent on small validation sets over many
    epochs) broken by the lower validation loss, then by the lower training loss (a saturated
    softmax gives many epochs a validation loss of exactly 0: one at training loss 282 was kept
    over later ones at 0); the training loss alone when nothing is held out."""
    if row["val_accuracy"] is None:
        return [-row["train_loss"]]
    return [row["val_accuracy"], -row["val_loss"], -row["train_loss"]]


def _fell_every_epoch(losses):
    return all(later < earlier for earlier, later in zip(losses, losses[1:]))


def _stored_score(score):
    return list(score) if isinstance(score, (list, tuple)) else [score]  # checkpoints before the tie-break hold a float


class Trainer:
    """One fine-tuning run: the range test, the epochs with recovery, the run folder's writes."""

    def __init__(self, options, config, dataset, weight_set, run, cache_memory, progress, log):
        self.options, self.config, self.dataset, self.run = options, config, dataset, run
        self.cache_memory, self.progress, self.log = cache_memory, progress, log
        self.ledger = BrokenFiles(options.max_broken, say=log if run.chief else None,
                                  total=len(dataset.train) + len(dataset.val))
        self.net = TrainingNetwork(options, weight_set, len(dataset.class_names), len(dataset.train) * options.epochs,
                                   cache_point(options), log)
        self.data = TrainingData(dataset, options, self.net.strategy, self.ledger, run.path, run.chief,
                                 self.net.multiworker)
        self.model_pending = False  # a better epoch than model.npz holds
        self.checkpoint_behind = False  # the last ended epoch's checkpoint was put off (Trainer._save)
        self.model_epoch = None  # the epoch model.npz holds, recorded in each checkpoint
        self.best_epoch = None  # the epoch self.best holds
        self._end_batch = None  # (the epoch's last full batch, its size), to check the weights it ends with
        self._ended_early = False  # resumed with fewer --epochs than begun with: its checkpoint stays
        self._validation_read = False  # classes whose validation images are all broken: said once, after it

    # --- the run ----------------------------------------------------------------------------

    def fit(self):
        started = time.perf_counter()
        state = self._restore()
        if self.data.cache_after:
            whence = "computed once" if store_folder() is None else "taken from the feature store or computed once"
            self.log(f"the frozen layers' output ({self.data.cache_after}) for the {len(self.dataset.train):,} "
                     f"training and {len(self.dataset.val):,} validation images, {VIEWS} views each, is {whence}; "
                     "the epochs then train on it (--no-cache: on the images)")
        self.data.prepare(self.net.model, self.net.policy, len(self.dataset.class_names), self.cache_memory, self.progress,
                          self.log)
        interrupts.raise_if_pending()  # a Ctrl-C swallowed while the features were cached
        if state["base_lr"] is None:
            state["base_lr"] = self._find_rate(state)
        self._follow_rate()
        interrupts.raise_if_pending()
        board = _TensorBoard(self.run.path / "tensorboard" if self.run.chief else None)
        show = EpochLog(self.log, self.options.epochs, self.run.path / "history.csv")
        try:
            with _StopOnSignal() as stop:
                while state["epoch"] < self.options.epochs:
                    row = self._epoch_with_recovery(state, stop)
                    board.write(row)
                    show(row, stopping=bool(stop.signal_number))
                    if stop.signal_number and state["epoch"] < self.options.epochs:
                        if self.checkpoint_behind:  # (this epoch's was put off)
                            self._save(state, final=True)
                        self.run.write_history(state["history"], final=True)
                        raise TrainingInterrupted(
                            f"stopped by {interrupts.signal_name(stop.signal_number)} after epoch {state['epoch']}: model.npz "
                            f"holds epoch {state['best_epoch']}; continue with --resume --output {self.run.path}",
                            stop.signal_number, self.run.path)
                # The last epoch has ended: a signal now waits for the run's last writes (a few
                # seconds), so that a finished run is never left looking unfinished.
                board.close()
                self._write_pending_model()
                summary = self._finish(state, time.perf_counter() - started)
        except BaseException as stopping:
            show.stopped()  # a stop mid-epoch: the log shows the last epoch that ended, as history.csv does
            self._write_pending_model(stopping=str(stopping))  # whatever stops the run, model.npz is the best epoch
            self._write_ledger(quietly=True)  # and the files skipped so far are listed, as the log said
            raise
        finally:
            board.close()
        if stop.signal_number:  # honoured once the run is whole: a shell loop or a notebook's sweep stops here
            raise TrainingInterrupted(
                f"stopped by {interrupts.signal_name(stop.signal_number)} as the last epoch ended: the run was completed "
                f"first; model.npz holds epoch {state['best_epoch']}", stop.signal_number, self.run.path, summary=summary)
        return summary

    def _restore(self):
        self.best = self.net.trained_values()
        self.run.remove_stale(self.log)
        given = self.config["lr"]  # on a resumed run, the rate it started with unless a new one is given
        # A run resumed before its first checkpoint keeps the rate its range test found (the test
        # restores everything it touched, so it would find the same again).
        found = self.config.get("lr_found") if given == "auto" else None
        fresh = dict(epoch=0, step=0, history=[], best_score=None, best_epoch=None, recoveries=0,
                     notes=[] if found is None else [f"lr auto: the range test's earlier choice {found:.3g}"],
                     base_lr=found if given == "auto" else given, planned_epochs=self.options.epochs,
                     precision=self.net.policy)
        if not self.run.checkpoint.exists():
            if found is not None:
                self.log(f"the range test's earlier choice is kept: base rate {found:.3g}")
            return fresh
        from . import checkpoint as checkpoints

        record, arrays = checkpoints.load(self.run.checkpoint)
        self.net.load_state_arrays(arrays)
        self.best = [arrays[f"best/{i}"] for i in range(len(self.net.variables))]
        state = dict(fresh, **record)
        # A model write that failed (a full disk), was cut short by a kill, or had not come yet (they
        # are spaced out) when the run was killed: model.npz may hold an earlier best epoch, or none.
        # Checkpoints from before `model_epoch` was recorded do not say: written again to be sure.
        self.model_epoch, self.best_epoch = state.get("model_epoch"), state["best_epoch"]
        self.model_pending = state["best_epoch"] is not None and (
            not self.run.model.exists() or self.model_epoch != state["best_epoch"])
        if state["epoch"] >= self.options.epochs and not state["step"]:  # (an --epochs below them is refused earlier)
            self.log(f"resuming {self.run.path}: the {self.options.epochs} epoch(s) --epochs asks are done; finishing "
                     "the run")
        else:
            self.log(f"resuming {self.run.path} at epoch {state['epoch'] + 1}"
                     + (f", step {state['step']}" if state["step"] else ""))
        self._note_changes(state)
        return state

    def _note_changes(self, state):
        """A resumed run may change its rate and length: say so, in the log and history.csv."""
        changes = []
        if not self.options.auto_lr and self.options.lr != state["base_lr"]:
            changes.append(f"base rate {state['base_lr']:.3g} -> {self.options.lr:.3g}")
            state["base_lr"] = self.options.lr
        planned = state.get("planned_epochs")
        # The most epochs any session planned: a second short resume (30 -> 10 -> 12) forgot the
        # 30 the first kept the checkpoint for, and removed it.
        begun = state["begun_epochs"] = max(state.get("begun_epochs") or 0, planned or 0) or None
        if planned is not None and planned != self.options.epochs:
            changes.append(f"epochs {planned} -> {self.options.epochs}")
            epoch, base = state["epoch"], state["base_lr"]
            before, now = scheduled_rate(base, epoch, planned), scheduled_rate(base, epoch, self.options.epochs)
            if base is not None and before != now and epoch < self.options.epochs:  # the drop: at two thirds of them
                changes.append(f"so epoch {epoch + 1} {'is past' if now < before else 'is before'} the schedule's drop "
                               f"to a tenth: rate {before:.3g} -> {now:.3g}")
        if state.get("precision", self.net.policy) != self.net.policy:  # (checkpoints before it was recorded: unsaid)
            changes.append(f"precision {_precision_name(state['precision'])} -> {_precision_name(self.net.policy)}")
            state["precision"] = self.net.policy
        if state["step"] and state["epoch"] >= self.options.epochs:
            changes.append(f"epoch {state['epoch'] + 1}, stopped at step {state['step']}, left unfinished: --epochs "
                           f"{self.options.epochs} ends the run before it")
        if begun is not None and self.options.epochs < begun:  # a slip of a number cannot end a run for good
            self._ended_early = True
            changes.append(f"its checkpoint is kept, so --epochs {begun} can still go on as begun")
        if changes:
            state["notes"].append("resumed with " + ", ".join(changes))
            self.log(state["notes"][-1])

    def _find_rate(self, state):
        """Run the range test from the run's starting point, then put everything back.

        The test measures the kernels' rate: the fresh layers' biases are held still during it,
        since their gradients do not scale with the features and they keep Caffe's own rate
        (`_follow_rate`). Moving them with the sweep let them set the edge instead: at features
        20x smaller the test then chose 8x too small a rate for the kernels.
        """
        before = self.net.state_arrays()
        self.net.set_rule(self.options.weight_decay, fresh_bias_factor=0.0)
        steps = lr_finder.step_count(self.data.batches_per_epoch, self.data.cache_after is not None)
        batches = itertools.chain.from_iterable(self.data.train_batches(epoch) for epoch in itertools.count())

        def step(rate, batch):
            self.net.set_rate(rate, momentum_follows=False)  # its rising rates keep Caffe's rule, which its choice was tuned on
            loss_sum, _, count = self.net.step(batch)
            bar.update(1)
            return loss_sum / max(count, 1.0)

        with progress_bar(steps, self.progress, unit="step", desc="learning-rate range test",
                          leave=False) as bar:  # its result is the line logged after it, as an epoch's
            try:
                result = lr_finder.run(step, batches, steps, restart=lambda: self.net.load_state_arrays(before))
            except lr_finder.RangeTestError as error:
                raise TrainingError(str(error)) from None
            finally:
                # The test stops mid-epoch. Left to the cyclic collector (matplotlib's savefig
                # keeps frames in cycles), the unfinished tf.data iterator stalled a later
                # gc.collect() for up to a minute on a busy machine: it goes now.
                del batches
                self.net.load_state_arrays(before)
                self.net.set_rule(self.options.weight_decay, fresh_bias_factor=1.0)
        self.log(result.describe())
        if self.run.chief:
            range_test_curve(result, self.run.path / "lr_find.png")
        if not result.measured:
            self.log(f"warning: the range test measured no rate: its loss stayed near its lowest only up to "
                     f"{result.edge:.1e}, {result.unmeasured} (a model that fits this data already, batches of "
                     f"{self.options.batch_size} that scatter, a wide valley); Caffe's rate {CAFFE_BASE_LR:g} is used "
                     "instead, unless the loss exploded near it; give --lr to choose one")
            result.chosen = lr_finder.fallback_rate(result, CAFFE_BASE_LR)
            if result.chosen < CAFFE_BASE_LR:
                self.log(f"the loss exploded at {result.explosion:.1e}, so {result.chosen:.1e} is used: a tenth of that")
        self.config.update(lr_found=result.chosen, lr_measured=result.measured)
        self.run.write_config(self.config)
        state["notes"].append(f"lr auto: range test chose {result.chosen:.3g}" if result.measured else
                              f"lr auto: range test measured no rate; {result.chosen:.3g} used")
        return result.chosen

    def _follow_rate(self):
        """With a measured rate: the kernels' decay keeps Caffe's rate x decay, and the biases
        keep Caffe's rate in fresh layers (train_options.decay_for_rate, bias_factor_for_rate)."""
        found = self.config["lr_found"]
        if found is None:
            return
        decay, bias_factor = decay_for_rate(self.options.weight_decay, found), bias_factor_for_rate(found)
        self.net.set_rule(decay, bias_factor)
        if self.config.get("weight_decay_used") != decay:
            self.config.update(weight_decay_used=decay, bias_rate_factor=bias_factor)
            self.run.write_config(self.config)
            if self.config.get("lr_measured") is False:  # Caffe's rate or the fallback below it: said already
                return
            given = self.config["lr"]  # a number: a resumed run's new --lr, which the schedule now follows
            now = "" if given == "auto" else f"; the base rate is now {given:.3g} (--lr), the decay stays the range test's"
            self.log(f"with the measured rate {found:.3g}: weight decay {decay:.3g} on kernels ({self.options.weight_decay:g}"
                     f" x {CAFFE_BASE_LR:g} / {found:.3g}, Caffe's decay per step); fresh layers' biases at Caffe's rate "
                     f"({CAFFE_BASE_LR:g} x their multipliers){now}")

    def _epoch_with_recovery(self, state, stop):
        """Train one epoch; if it goes wrong, restore its start, divide the rate, and retry."""
        while True:
            good = self.net.state_arrays(), state["step"], state.get("partial")
            try:
                return self._epoch(state, stop)
            except Diverged as failure:
                reason = str(failure)
                new_rate = recovery.next_rate(state["base_lr"], state["recoveries"], self.options.max_recoveries)
                epoch = state["epoch"] + 1
                if new_rate is None:
                    kept = (f"model.npz (epoch {state['best_epoch']}) and the checkpoint of epoch {epoch - 1} are kept in "
                            f"{self.run.path}: --resume with a lower --lr continues" if state["best_epoch"] else
                            "no epoch had ended, so no model was written: start again with a lower --lr")
                    tries = f"{state['recoveries']} recover{'y' if state['recoveries'] == 1 else 'ies'}"
                    raise TrainingError(f"{reason} in epoch {epoch}: training diverged (base rate {state['base_lr']:.3g} "
                                        f"after {tries}); {kept}") from None
                self.net.load_state_arrays(good[0])
                state.update(step=good[1], partial=good[2], recoveries=state["recoveries"] + 1, retry=True)
                state["notes"].append(f"diverged: {reason}; base rate {state['base_lr']:.3g} -> {new_rate:.3g}")
                self.log(f"epoch {epoch} diverged: {reason}; retrying it from its last good state at base rate "
                         f"{new_rate:.3g}, down from {state['base_lr']:.3g} (recovery {state['recoveries']} of "
                         f"{self.options.max_recoveries})")
                state["base_lr"] = new_rate

    def _epoch(self, state, stop):
        epoch, epochs = state["epoch"], self.options.epochs
        # A lower rate (the schedule's drop, a recovery, a resume with a lower --lr) applies at
        # once, momentum included (CaffeSGD.change_rate).
        self.net.set_rate(scheduled_rate(state["base_lr"], epoch, epochs))
        previous = recovery.epoch_reference(row["train_loss"] for row in state["history"])
        watch = LossWatch(len(self.dataset.class_names), previous, settle=state.get("retry", False))
        started = time.perf_counter()
        totals = self._train_steps(epoch, state, stop, watch)
        # A step's loss is computed before its update, so the last update of an epoch can
        # leave inf/NaN weights behind a finite loss: check them before they are saved.
        problem = None if self.net.weights_finite() else "weights became non-finite"
        epoch_loss = totals[0] / max(totals[2], 1)
        problem = problem or watch.check_epoch(epoch_loss)
        if not problem and self._end_batch is not None:
            problem = watch.check_end(self.net.batch_loss(self._end_batch[0]), epoch_loss)
        self._end_batch = None
        if problem:
            raise Diverged(problem)
        return self._finish_epoch(state, totals, time.perf_counter() - started)

    def _train_steps(self, epoch, state, stop, watch):
        totals = state.pop("partial", None) or [0.0, 0.0, 0.0]
        batches, self._end_batch = self.data.batches_per_epoch, None
        desc = f"epoch {epoch + 1}/{self.options.epochs}"
        # The bar goes when the epoch ends (leave=False): its summary line stays, one per epoch, as in Keras.
        with progress_bar(self.data.train_count, self.progress, unit="img", desc=desc, initial=int(totals[2]),
                          leave=False) as bar:
            step = state["step"]
            for batch in self.data.train_batches(epoch, step):
                loss_sum, correct, count = self._step(batch)
                if self._end_batch is None or count >= self._end_batch[1]:  # the last full one: a short one scatters
                    self._end_batch = batch, count  # to check the weights the epoch ends with
                step += 1
                problem = watch.check(loss_sum / max(count, 1.0), step)
                if problem:
                    raise Diverged(problem)
                totals = [totals[0] + loss_sum, totals[1] + correct, totals[2] + count]
                bar.update(int(count))
                bar.set_postfix(loss=f"{totals[0] / max(totals[2], 1):.3f}", acc=f"{totals[1] / max(totals[2], 1):.3f}")
                if stop.signal_number and step < batches:
                    self._save(dict(state, step=step, partial=totals), final=True)
                    kept = (f"model.npz holds epoch {state['best_epoch']}" if self.run.model.exists()
                            else "no model.npz yet (one is written when an epoch ends)")
                    raise TrainingInterrupted(
                        f"stopped by {interrupts.signal_name(stop.signal_number)} at epoch {epoch + 1}, step {step}: {kept}; "
                        f"continue with --resume --output {self.run.path}", stop.signal_number, self.run.path)
            if bar.total and bar.n < bar.total:  # broken images skipped: the epoch ends at 100% of what was read
                bar.total = bar.n
                bar.refresh()
        self.ledger.check(len(self.dataset.train) + len(self.dataset.val))
        self.data.check_every_class_is_trained()  # (uncached: the broken files are known after the first epoch)
        return totals

    def _step(self, batch):
        try:
            return self.net.step(batch)
        except LostWorker as lost:
            raise TrainingError(
                f"lost contact with another worker ({lost}); the job cannot go on without it. "
                f"Restart every worker with --resume to continue from the last checkpoint in {self.run.path}") from None

    def _finish_epoch(self, state, totals, seconds):
        epoch = state["epoch"]
        val_loss, val_accuracy = self.net.validate(self.data.val_batches()) if len(self.dataset.val) else (None, None)
        self._say_unread_validation_classes()
        train_loss = totals[0] / max(totals[2], 1)
        row = dict(epoch=epoch + 1, train_loss=train_loss, train_accuracy=totals[1] / max(totals[2], 1),
                   val_loss=val_loss, val_accuracy=val_accuracy,
                   lr=scheduled_rate(state["base_lr"], epoch, self.options.epochs), seconds=round(seconds, 3),
                   note="; ".join(state["notes"]) or None)
        state["history"].append(row)
        state.update(notes=[], retry=False)
        score = epoch_score(row)
        if state["best_score"] is None or score > _stored_score(state["best_score"]):
            state.update(best_score=score, best_epoch=epoch + 1)
            self.best, self.best_epoch = self.net.trained_values(), epoch + 1
            self.model_pending = True
        state.update(epoch=epoch + 1, step=0, planned_epochs=self.options.epochs)
        self._save(state)
        return row

    # --- writing ----------------------------------------------------------------------------

    def _save(self, state, final=False):
        """The checkpoint, model.npz when due, then history.csv: a row in the history means its
        epoch's checkpoint and model are on disk. The first model.npz comes before the
        checkpoint, so that a kill between the two never leaves an epoch checkpointed with no
        model; later ones come after it, so model.npz never holds an epoch the checkpoint
        has not recorded as the best. Quick epochs are saved only as often as the writes take
        at most a tenth of the run (a kill -9 then costs the epochs since the last); the first
        and last epochs, and a stopped run (`final`), always are."""
        self.checkpoint_behind = not (final or state["epoch"] >= self.options.epochs or self.run.checkpoint_due())
        if self.checkpoint_behind:
            return
        first_model_error = None
        if self.model_pending and not self.run.model.exists():
            try:
                self._write_pending_model()
            except AlexftError as error:  # a full disk: the epoch is still checkpointed if it fits
                first_model_error = error
        arrays = self.net.state_arrays()
        arrays.update({f"best/{i}": value for i, value in enumerate(self.best)})
        state["model_epoch"] = self.model_epoch
        try:
            self.run.save_checkpoint(state, arrays)
        except AlexftError as error:  # a full disk: say what is usable and what it takes to go on
            if first_model_error or not self.run.model.exists() or self.model_epoch is None:
                raise
            raise _going_on(error, f"model.npz holds epoch {self.model_epoch} and is usable",
                            arrays.values(), "this run's checkpoint") from None
        if first_model_error:  # the epoch is checkpointed: say what going on takes, as above
            model = self.net.weight_set(self.best, self.dataset.class_names).params.values()
            raise _going_on(first_model_error, f"checkpoint.npz holds epoch {state['epoch']}",
                            [array for pair in model for array in pair], "the model") from None
        if self.model_pending and (final or self.run.model_write_due()):
            self._write_pending_model()
        self.run.write_history(state["history"], final=final)

    def _write_pending_model(self, stopping=None):
        """`stopping`: the message of what stops the run, which a failure here is not raised over
        (it is logged, unless that message says the same: a second try at a full disk)."""
        if not self.model_pending:
            return
        try:
            self.run.write_model(self.net.weight_set(self.best, self.dataset.class_names))
            self.model_pending = False
            self.model_epoch = self.best_epoch
        except AlexftError as error:
            if stopping is None:
                raise
            if str(error) not in stopping:
                self.log(str(error))  # the error that stopped the run comes next, and matters more

    def _write_ledger(self, quietly=False):
        """broken_files.json, of the files skipped so far (a stopped run's too: a resume lists them
        again), and val.txt again without those of them it listed."""
        if not self.run.chief:
            return
        try:
            self.ledger.write(self.run.path / "broken_files.json")
            if any(str(path) in self.ledger.errors for path in self.dataset.val.paths):
                self.run.write_val_list(self.dataset, self.config["data_dir"], broken=self.ledger.errors)
        except AlexftError as error:
            if not quietly:
                raise
            self.log(str(error))

    def _finish(self, state, seconds):
        self.run.write_history(state["history"], final=True)
        if self.options.keep_last and self.run.chief:
            weights_io.save(self.net.weight_set(self.net.trained_values(), self.dataset.class_names, trained_only=True),
                            self.run.path / "last_layers.npz")
        self._write_ledger()
        history = state["history"]
        metrics = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
        best = next((row for row in history if row["epoch"] == state["best_epoch"]), {})
        summary = dict(run=str(self.run.path), epochs=len(history), best_epoch=state["best_epoch"],
                       train_images=len(self.data.usable_labels("train")), val_images=len(self.data.usable_labels("val")),
                       broken_files=len(self.ledger.errors), cached=self.data.cache_after is not None,
                       seconds=round(seconds, 3), lr=self.config["lr"], lr_found=self.config["lr_found"],
                       lr_measured=self.config.get("lr_measured"),
                       weight_decay=self.config.get("weight_decay_used", self.options.weight_decay),
                       base_lr=state["base_lr"], recoveries=state["recoveries"],
                       **{key: (history[-1] if history else {}).get(key) for key in metrics},
                       best={key: best.get(key) for key in metrics})
        losses = [row["train_loss"] for row in history]
        verdicts, log = [], self.log
        self.log = verdicts.append  # held until the run folder is whole: a warning may be raised (-W error)
        try:
            if not self._say_if_the_loss_climbed(losses, state["base_lr"], state["best_epoch"]):
                self._say_if_nothing_was_learned(best, state["base_lr"], losses, rate_given=self.config["lr"] != "auto")
        finally:
            self.log = log
        summary["warnings"] = list(dict.fromkeys(list(getattr(log, "said", ())) +
                                                 [line.removeprefix(WARNING) for line in verdicts]))
        self.run.finish(summary, self.options.keep_checkpoint or self._ended_early)
        for line in verdicts:
            log(line)
        return summary

    def _say_if_the_loss_climbed(self, losses, base_lr, best_epoch):
        """A run whose training loss ended at over twice both its lowest epoch's and a uniform
        guess's took steps too large for the data, though no single epoch ran away (a resumed
        run at a larger --lr: 2.43, 5.17, 15.19). Said, naming the epoch model.npz keeps; True if so."""
        if len(losses) < 2:
            return False
        lowest = min(range(len(losses)), key=losses.__getitem__)
        classes = len(self.dataset.class_names)
        guess = math.log(max(classes, 2))
        if losses[-1] <= CLIMB_SHARE * max(losses[lowest], guess):
            return False
        self.log(f"warning: the training loss climbed from {losses[lowest]:.4f} (epoch {lowest + 1}) to {losses[-1]:.4f} "
                 f"(epoch {len(losses)}), over twice a uniform guess's (ln {classes} = {guess:.4f}): the steps are too "
                 f"large; model.npz holds epoch {best_epoch}; try a smaller --lr than {base_lr:.3g}")
        return True

    def _say_if_nothing_was_learned(self, best, base_lr, losses=(), rate_given=False):
        """A run whose best epoch still has a uniform guess's loss ends with a warning, not in
        silence; one whose validation accuracy is clearly above chance did learn, and is told so.
        `losses`: each epoch's training loss; one that fell every epoch needs more steps, not a
        smaller rate. `rate_given`: the user's --lr, not the range test's. A loss that stays at
        a guess's without falling every epoch fits a rate too small to move the weights as well
        as one so large it collapsed them, so the user's own rate is not called too large: the
        range test measures which."""
        classes = len(self.dataset.class_names)
        loss = best.get("train_loss")
        guess = math.log(classes)
        if loss is None or loss < CHANCE_LOSS_SHARE * guess:
            if not self._say_if_only_the_largest_class_is_answered(best):
                self._say_if_within_luck(best, base_lr)
            return
        relation = "about" if loss <= 1.1 * guess else "above"
        said = f"the best epoch's training loss {loss:.4f} is {relation} a uniform guess's (ln {classes} = {guess:.4f})"
        scored = self.data.usable_labels("val")
        accuracy, chance = best.get("val_accuracy"), _chance_accuracy(scored)
        if accuracy is not None and _above_chance(accuracy, chance, len(scored)):
            if losses and losses[-1] == min(losses):  # it learned, and its loss ends at its lowest: still falling
                return  # (the means hold the untrained start; a re-trial's 2.54, 2.55, 2.27 at the range test's rate was told to lower it)
            self.log(f"warning: {said}, though its validation accuracy {accuracy:.3f} is above chance "
                     f"({chance:.3f}): the steps overshoot; try a smaller --lr than {base_lr:.3g}")
            return
        if accuracy is not None and accuracy > chance and len(scored):  # said, or "nothing" reads as false beside them
            said += (f", and its validation accuracy {accuracy:.3f} is within luck's reach of chance "
                     f"{_luck_words(chance, len(scored), len(self.dataset.class_names))}")
        # The user's rate, and a loss that never fell a tenth below its first epoch's: a rate too
        # small to move the weights (1e-8 on fc7 features 40x larger: 18.2, 18.1, ...) was told
        # to go smaller. Which way is not known from the losses; the range test measures it.
        unmoved = rate_given and len(losses) >= 2 and min(losses) >= 0.9 * losses[0]
        if loss > 1.5 * guess and not unmoved:
            self.log(f"warning: nothing was learned: {said}; try {self._either(f'a smaller --lr than {base_lr:.3g}')}")
        elif relation == "above" and not unmoved:  # worse than guessing: more steps at this rate would not help
            self.log(f"warning: nothing was learned: {said}; try "
                     f"{self._either(f'a smaller --lr than {base_lr:.3g}', 'more --epochs')}")
        elif len(losses) >= 2 and _fell_every_epoch(losses) and not unmoved:
            self.log(f"warning: nothing was learned yet: {said}, but it fell every epoch ({losses[0]:.4f} to "
                     f"{losses[-1]:.4f}): try more --epochs (more steps)")
        elif rate_given:
            self.log(f"warning: nothing was learned: {said}; try "
                     + self._either(f"a new run with --lr auto (a range test picks the rate; {base_lr:.3g} may be too "
                                    "small or too large)", "more --epochs"))
        else:
            self.log(f"warning: nothing was learned: {said}; try "
                     f"{self._either('more --epochs (more steps)', f'a smaller --lr than {base_lr:.3g}')}")

    def _say_unread_validation_classes(self):
        if self._validation_read:
            return
        self._validation_read = True
        unread = self.data.unread_validation_classes()
        if unread:
            self.log(f"warning: none of the validation images of class {unread_classes_said(unread)} could be read (the "
                     "skipped lines name them): accuracy is not measured there")

    def _unless_measured(self):
        """The range test offered to a run whose rate was given, not to one it measured the rate of."""
        return "" if self.config.get("lr") == "auto" else " (--lr auto measures one)"

    def _either(self, *remedies):
        """The remedies as alternatives, with training fewer layers where more than one is trained."""
        remedies += ("training fewer layers",) if len(self.options.train) > 1 else ()
        return remedies[0] if len(remedies) == 1 else f"{', '.join(remedies[:-1])}{',' * (len(remedies) > 2)} or {remedies[-1]}"

    def _say_if_only_the_largest_class_is_answered(self, best):
        """On lopsided data, a model that answers its largest class everywhere has a low loss
        and a validation accuracy that looks fine: that class's share of the images."""
        scored, accuracy = self.data.usable_labels("val"), best.get("val_accuracy")
        if accuracy is None or not len(scored):
            return
        chance, one_image = _chance_accuracy(scored), 1 / len(scored)
        if chance <= 1 / len(self.dataset.class_names) + one_image or accuracy > chance + one_image:
            return False  # balanced to within an image, or at least two images beyond that answer
        largest = self.dataset.class_names[int(np.bincount(scored).argmax())]
        self.log(f"warning: the best epoch's validation accuracy {accuracy:.3f} is no better than always answering "
                 f"{largest!r}, the largest class ({chance:.3f} of the validation images): the model may not tell "
                 "the classes apart; check each class with alexft evaluate (its class-mean accuracy)")
        return True

    def _say_if_within_luck(self, best, base_lr):
        """A training loss below a guess's is no proof of learning what tells the classes apart:
        a run at exactly chance on balanced classes (loss 1.23 against ln 4 = 1.39), and random
        labels memorised (0.5 on 12 images, the best of 200 epochs), ended in silence. A best
        validation accuracy within three standard errors of chance is said, with why it may be."""
        scored, accuracy = self.data.usable_labels("val"), best.get("val_accuracy")
        if accuracy is None or not len(scored):
            return
        chance = _chance_accuracy(scored)
        if _above_chance(accuracy, chance, len(scored)):
            return
        limit = _luck_limit(chance, len(scored))
        said = (f"warning: the best epoch's validation accuracy {accuracy:.3f} is within luck's reach of chance "
                f"{_luck_words(chance, len(scored), len(self.dataset.class_names))}")
        fitted = best.get("train_accuracy")
        if limit >= 1:
            self.log(f"{said}: no accuracy on so few images can show that the model tells the classes apart; hold "
                     "out more images with --val-split or --val-dir")
        elif fitted is not None and fitted > limit:
            self.log(f"{said}, while its training accuracy is {fitted:.3f}: it fits the images it trains on, not "
                     f"others; try {self._either('more images per class')}")
        else:
            self.log(f"{said}: the model has not learned to tell the classes apart; try "
                     f"{self._either('more --epochs', f'another --lr than {base_lr:.3g}' + self._unless_measured())}")


def _chance_accuracy(labels):
    """What always answering the most common class scores on these labels (1/classes when balanced)."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def _above_chance(accuracy, chance, images):
    """Whether a validation accuracy over `images` images is beyond what guessing reaches by
    luck: more than three standard errors above `chance`."""
    return images > 0 and accuracy > _luck_limit(chance, images)


def _luck_limit(chance, images):
    return chance + 3 * math.sqrt(chance * (1 - chance) / images)


def _luck_words(chance, images, classes):
    """The limit, as the warnings give it; one over 1 (a few images) is said as such, not as 1.150.
    A chance above 1/classes is named as the largest class's share (a user reads "chance" with 3
    classes as 0.333, not 0.750)."""
    limit = _luck_limit(chance, images)
    share = ", the largest class's share of them," if chance > 1 / classes + 1e-9 else ""
    return (f"({chance:.3f}{share} + 3 standard errors = {limit:.3f} on {images} images)" if limit < 1 else
            f"({chance:.3f}{share} + 3 standard errors is over 1 on {images} images)")


class _TensorBoard:
    """Each epoch's figures laid out as Keras' TensorBoard callback lays them out: runs `train`
    and `validation`, scalars `epoch_loss` and `epoch_accuracy` (overlaid on one chart per metric),
    and `epoch_learning_rate` under `train`. `folder` None (not the chief): nothing is written."""

    def __init__(self, folder):
        self.writers = {}
        if folder is not None:
            self.writers = {split: tf.summary.create_file_writer(str(folder / split)) for split in ("train", "validation")}

    def write(self, row):
        scalars = {"train": dict(epoch_loss=row["train_loss"], epoch_accuracy=row["train_accuracy"],
                                 epoch_learning_rate=row["lr"]),
                   "validation": dict(epoch_loss=row["val_loss"], epoch_accuracy=row["val_accuracy"])}
        for split, writer in self.writers.items():
            with writer.as_default(step=row["epoch"]):
                for name, value in scalars[split].items():
                    if value is not None:
                        tf.summary.scalar(name, value)

    def close(self):  # may be called twice
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


class _StopOnSignal:
    """Turn SIGINT/SIGTERM into a request to stop after the current step (main thread only)."""

    def __init__(self):
        self.signal_number = None
        self._previous = {}

    def _handle(self, number, frame):
        self.signal_number = number

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                # Ignored when the process began (a script's `alexft finetune ... &`, nohup): it stays
                # ignored, as it was through the listing and the range test.
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False


def _going_on(error, usable, arrays, what):
    """A full disk's error, with what is usable and the space going on takes (--resume)."""
    size = sum(array.nbytes for array in arrays) / 2**20
    return type(error)(f"{error}; {usable}; to go on, free about {size:,.0f} MiB ({what}) and --resume")
