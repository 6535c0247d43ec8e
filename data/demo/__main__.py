"""Entry point of ``python -m data.demo`` (see :mod:`data.demo.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
