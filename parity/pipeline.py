"""``python -m parity.pipeline`` (the README's command): the val-pipeline check of :mod:`parity.suite.pipeline`."""
import sys

from parity.suite.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
