"""``python -m benchmarks.adaptive`` in a source checkout: :mod:`flowproto.bench.adaptive`."""

import sys

from flowproto.bench.adaptive import main

if __name__ == "__main__":
    sys.exit(main())
