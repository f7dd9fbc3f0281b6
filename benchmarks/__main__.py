"""``python -m benchmarks`` in a source checkout: the same as ``flowproto bench``.

The harness is installed with the package (:mod:`flowproto.bench`); this directory
keeps the study scripts (``core``, ``file_rss``) and results.
"""

import sys

from flowproto.bench import main

sys.exit(main(prog="python -m benchmarks"))
