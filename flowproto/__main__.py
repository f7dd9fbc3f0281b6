"""Entry point for ``python -m flowproto``; runs the ``flowproto`` command line."""

from flowproto.cli import main

if __name__ == "__main__":
    main(prog_name="flowproto")
