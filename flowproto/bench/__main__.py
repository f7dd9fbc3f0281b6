"""``python -m flowproto.bench``: the same as ``flowproto bench``."""

import sys

from . import main

sys.exit(main(prog="python -m flowproto.bench"))
