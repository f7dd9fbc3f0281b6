"""flowproto benchmarks: ``python -m benchmarks.core`` times the sans-IO core alone."""
