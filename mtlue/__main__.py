"""`python -m mtlue` is the `mtlue` command (what `torchrun -m mtlue ...` runs in every process)."""

from cli import main

if __name__ == "__main__":
    main(prog_name="mtlue")
