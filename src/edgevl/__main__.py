"""`python -m edgevl` entry point (also what `torchrun -m edgevl` runs)."""

from edgevl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
