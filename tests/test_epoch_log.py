"""Which epochs get a log line (alexft.epoch_log), on rows made up here, with a fake clock."""
import pytest

from alexft import epoch_log


def row(epoch, note=None):
    return dict(epoch=epoch, train_loss=1.0, train_accuracy=0.5, val_loss=None, val_accuracy=None, lr=0.01,
                seconds=0.1, note=note)


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(epoch_log.time, "monotonic", lambda: now[0])
    return now


def shown_epochs(epochs, seconds_per_epoch, clock, notes=(), stop_after=None):
    lines = []
    log = epoch_log.EpochLog(lines.append, epochs, "run/history.csv")
    for epoch in range(1, (stop_after or epochs) + 1):
        clock[0] += seconds_per_epoch
        log(row(epoch, "recovered" if epoch in notes else None), stopping=epoch == stop_after)
    return [int(line.split("/")[0].split()[1]) for line in lines if line.startswith("epoch ")], lines


def test_a_run_of_up_to_twenty_epochs_shows_every_one(clock):
    assert shown_epochs(20, 0.01, clock)[0] == list(range(1, 21))


def test_many_quick_epochs_show_an_even_twentieth_and_say_where_the_rest_are(clock):
    shown, lines = shown_epochs(200, 0.01, clock)
    assert shown == [1] + list(range(10, 201, 10))
    assert lines[1] == "epochs are quick: from here a line every 10 epochs (or 10 s), every epoch is in run/history.csv"
    assert sum(line.startswith("epochs are quick") for line in lines) == 1


def test_slow_epochs_are_all_shown_however_many(clock):
    assert shown_epochs(200, epoch_log.LOG_INTERVAL, clock)[0] == list(range(1, 201))


def test_recoveries_the_last_epoch_and_a_stop_are_always_shown(clock):
    shown, _ = shown_epochs(205, 0.01, clock, notes={57})  # one line every ceil(205 / 20) = 11 epochs
    assert shown == sorted({1, 57, 205} | set(range(11, 205, 11)))
    shown, _ = shown_epochs(200, 0.01, clock, stop_after=37)
    assert shown == [1, 10, 20, 30, 37]


def test_the_line_gives_losses_accuracies_rate_and_time():
    text = epoch_log.describe_row(dict(epoch=3, train_loss=0.5, train_accuracy=0.8, val_loss=0.7, val_accuracy=0.6,
                                       lr=0.001, seconds=2.25), 10)
    assert text == "epoch 3/10: loss 0.5000, accuracy 0.800; val loss 0.7000, val accuracy 0.600 (lr 0.001, 2.2 s)"
