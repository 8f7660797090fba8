"""`python -m alexft ...`: the `alexft` command."""
from .cli import run

run()
