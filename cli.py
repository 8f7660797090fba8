"""`python cli.py ...` from a checkout runs the `alexft` command. The command itself lives in
alexft/cli.py, inside the package, so installing alexft adds no top-level module named `cli`."""
from alexft.cli import run

if __name__ == "__main__":
    run()
