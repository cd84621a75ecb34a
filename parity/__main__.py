"""``python -m parity``: the suite's command line (:mod:`parity.suite.cli`)."""
import sys

from parity.suite.cli import main

if __name__ == "__main__":
    sys.exit(main())
