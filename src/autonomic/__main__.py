"""``python -m autonomic``: the same as the ``autonomic`` command."""

import sys

from autonomic.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
