"""flowproto's benchmark studies and results (a source checkout only).

The socket benchmark harness is installed with the package as :mod:`flowproto.bench`
(``flowproto bench``); ``python -m benchmarks`` is the same command. Here:
``python -m benchmarks.core`` times the sans-IO core alone, ``python -m
benchmarks.file_rss`` watches a file transfer's memory, and ``python -m
benchmarks.adaptive`` runs the adaptive-credit scenarios.
"""
