"""The fuzz target's invariants over every recorded seed, and over what fuzzing found.

tests/fuzz_target.py is the atheris target (CI runs it for 60 s, .ci/run); here its check
runs under pytest without atheris, so a change that breaks an invariant on a real
conversation fails the ordinary suite at once.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_target import MAX_SEED_BYTES, check_one_input, record_seeds

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fuzz_corpus"
SEEDS = sorted(CORPUS.iterdir())

#: Inputs atheris found (base64), kept as regressions once fixed.
FOUND = {
    # A DATA frame with END_STREAM but not END_MESSAGE on a new stream (truncation, spec
    # §7.2): whole, the stream was opened before the error and the GOAWAY named it as
    # last_stream; split after its header, it was not. Now both check it first (§4.2).
    "truncating_data_on_a_new_stream_split_after_its_header": (
        "BwAAAAIAAAAAAAFhYgAAAAMAAgDLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vL"
        "y8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLy8vLywABAQ=="
    ),
    # A wrong preface: the GOAWAY's reason quotes the bytes seen so far, which differ by
    # split; the reason is informative (spec §13.3), the code is what must match.
    "wrong_magic_split": "hIkAAAABIAAAAAAAAA==",
}


def test_the_seed_corpus_is_recorded_from_real_conversations_and_small() -> None:
    names = [p.name for p in SEEDS]
    assert len(names) >= 100
    for prefix in ("conformance-", "conversation-", "invalid-", "frame-"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert all(p.stat().st_size <= MAX_SEED_BYTES for p in SEEDS)


def test_the_corpus_on_disk_is_what_the_vectors_and_cases_record() -> None:
    """A vector or conformance case added without re-recording the corpus would never be
    fuzzed: ``python tests/fuzz_target.py --write-corpus tests/fuzz_corpus``."""
    recorded = record_seeds()
    assert sorted(recorded) == [p.name for p in SEEDS]
    assert all(recorded[p.name] == p.read_bytes() for p in SEEDS)


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_the_fuzz_target_holds_on_every_seed(seed: Path) -> None:
    check_one_input(seed.read_bytes())


@pytest.mark.parametrize("name", sorted(FOUND))
def test_inputs_found_by_fuzzing_hold(name: str) -> None:
    check_one_input(base64.b64decode(FOUND[name]))


def test_the_atheris_entry_point_runs(tmp_path: Path) -> None:
    """A few hundred runs through libFuzzer itself (skipped without the fuzz extra), from
    a scratch copy of three seeds: libFuzzer writes what it finds into that directory."""
    pytest.importorskip("atheris")
    scratch = tmp_path / "corpus"
    scratch.mkdir()
    for name in ("conversation-handshake", "invalid-message_too_large", "conformance-5.5-1"):
        (scratch / name).write_bytes((CORPUS / name).read_bytes())
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_target.py"),
            "-runs=300",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
            str(scratch),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Done 300 runs" in proc.stderr
