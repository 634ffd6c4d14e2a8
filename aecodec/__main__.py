"""`python -m aecodec ...`: the same command line as the `aecodec` script."""

from aecodec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
