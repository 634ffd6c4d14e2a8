"""`python -m service.client ...`: the same command line as the `aecodec` script."""

from service.client.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
