"""`python -m archdsl`: the `archdsl` command (also how `torchrun -m archdsl train` starts
each process). Guarded: processes started with `spawn` import this module again."""

from .cli import main

if __name__ == "__main__":
    main()
