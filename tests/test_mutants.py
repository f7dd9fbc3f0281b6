"""tests/mutate.py's mutants stay aimed at the code (docs/mutation.md).

Each mutant names an exact snippet of a core module; when the code around it changes,
the snippet goes stale and the mutant silently stops testing anything. Six had, before
this test: every snippet must occur exactly once in ``flowproto/_*.py``, and in the
module its label names (the score table is filed by label).
"""

from __future__ import annotations

from mutate import MUTANTS, ROOT, locate


def test_mutant_ids_are_unique() -> None:
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids))


def test_every_mutant_snippet_occurs_once_in_its_labelled_module() -> None:
    problems = []
    for mutant in MUTANTS:
        located = locate(mutant, ROOT)
        if located.path is None:
            problems.append(f"{mutant.id}: {located.problem}: {mutant.original!r}")
        elif located.path.name != mutant.label:
            problems.append(f"{mutant.id}: labelled {mutant.label}, found in {located.path}")
        elif mutant.original == mutant.mutated:
            problems.append(f"{mutant.id}: the mutation changes nothing")
    assert not problems, "\n".join(problems)
