"""`python -m alexft ...`: the `alexft` command."""
from .cli import main

main(prog_name="alexft")
