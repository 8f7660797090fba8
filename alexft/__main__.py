"""`python -m alexft ...` and the `alexft` executable (setup.cfg): the command in a process of its own."""
import signal
import sys


def run():
    """Import the commands, then run one. Their import takes ~0.15 s (click and the commands'
    modules): a Ctrl-C then printed Python's traceback of the import. It is said as a stop
    during the command is, and the process ends by the signal, so a shell loop stops too."""
    try:
        from .cli import run as run_command
    except KeyboardInterrupt:
        from .interrupts import end_by_signal

        print("alexft: interrupted", file=sys.stderr, flush=True)
        end_by_signal(signal.SIGINT)
        raise  # (only if the signal could not be sent)
    run_command()


if __name__ == "__main__":
    run()
