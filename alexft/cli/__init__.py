"""The `alexft` command: parse options, call one library function, print the result.

Results go to stdout (`--json` for machines); progress and messages go to stderr. One module
per command group; none imports TensorFlow until a command needs it, so mistakes are refused
at once (benchmarks/usage_errors.py).
"""
import logging
import sys

import click

from .export import export
from .predict import classify, evaluate, features
from .train import finetune
from .weights import weights_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alexft")
def main():
    """AlexNet with the original Caffe ImageNet weights: classify and fine-tune."""
    logging.basicConfig(format="alexft: %(message)s", stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("alexft").setLevel(logging.INFO)  # our own notes; libraries' INFO chatter stays out


for command in (classify, evaluate, features, finetune, weights_group, export):
    main.add_command(command)

if __name__ == "__main__":
    main()
