"""``flowproto vectors``: where the installed package keeps the spec's test vectors."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import click

#: The vector files of spec §13, shipped in the package (``flowproto/_vectors``).
VECTOR_FILES = ("frames.json", "invalid.json", "conversations.json")


def vectors_dir() -> Path:
    """The directory of the installed test vectors (spec §13)."""
    return Path(str(resources.files("flowproto") / "_vectors"))


@click.command(short_help="Print where the spec's test vectors are installed.")
@click.option("--json", "as_json", is_flag=True, help="Print each file's path and vector count.")
def vectors(as_json: bool) -> None:
    """Print the directory holding the test vectors of spec §13 (frames.json,
    invalid.json, conversations.json), as installed with this package, for an
    implementation in another language to test itself against: for example
    'cp "$(flowproto vectors)"/*.json my-impl/testdata/'.
    """
    where = vectors_dir()
    missing = [name for name in VECTOR_FILES if not (where / name).is_file()]
    if missing:
        raise click.ClickException(f"missing from {where}: {', '.join(missing)}")
    if not as_json:
        click.echo(str(where))
        return
    files = {}
    for name in VECTOR_FILES:
        data = json.loads((where / name).read_text(encoding="utf-8"))
        files[name] = {"path": str(where / name), "vectors": len(data["vectors"])}
    click.echo(json.dumps({"directory": str(where), "files": files}, indent=2))
