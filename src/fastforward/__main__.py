"""`python -m fastforward` is the `fastforward` command."""

from fastforward.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
