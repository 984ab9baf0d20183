"""Which configured targets a selector names: `--targets` on every command that acts on
several targets, and the fleet's commands.

A selector is a comma-separated union of terms; a term is one or more atoms joined by
`+`, which all must hold (an intersection); an atom is a target's exact name, `tag:TAG`,
or a glob over names (`eu-*`, `db?`, `[ab]-main`, as fnmatch reads it, case counting).

    prod-db             the target named prod-db
    tag:prod            every target tagged prod
    eu-*                every target whose name starts with eu-
    tag:prod,eu-*       either
    tag:prod+tag:eu     both tags
    *                   every target

A name or a tag the config lacks is an error even inside a union: a typo never narrows
what a command acts on unseen. A glob may match nothing as long as the whole selector
matches something. The names come back in the order of the config's `targets:`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Protocol

from aishell.config.checks import TAG
from aishell.config.targetnames import unknown_target
from aishell.errors import UsageError

if TYPE_CHECKING:  # a listing selects from the config's view, without the models
    from aishell.config.models import Config


class Tagged(Protocol):
    """A target as a selector sees it: its tags (a TargetConfig, or a listing's view)."""

    @property
    def tags(self) -> Sequence[str]: ...


TAG_PREFIX = "tag:"
_GLOB_CHARACTERS = frozenset("*?[")


def select_targets(config: Config, selector: str) -> list[str]:
    """The names of the configured targets `selector` picks, in config order; a
    UsageError (one line, naming what exists) for an unknown name or tag, a malformed
    selector, or one that picks nothing."""
    return select_from(config.main.targets, selector, str(config.path))


def select_from(targets: Mapping[str, Tagged], selector: str, where: str) -> list[str]:
    """select_targets over a mapping of targets; `where` names the file in messages."""
    terms = [term.strip() for term in selector.split(",")]
    if not selector.strip() or not all(terms):
        raise UsageError(
            f"Target selector {selector!r} has an empty part; write names, tag:TAG or globs "
            "joined by ',' (either) or '+' (both)"
        )
    chosen: set[str] = set()
    for term in terms:
        chosen |= _term(targets, term, where)
    if not chosen:
        raise UsageError(
            f"Target selector {selector!r} matches no target; targets in {where} are: "
            f"{_listed(targets)}"
        )
    return [name for name in targets if name in chosen]


def target_tags(targets: Mapping[str, Tagged]) -> list[str]:
    """Every tag the targets carry, sorted."""
    return sorted({tag for target in targets.values() for tag in target.tags})


def _term(targets: Mapping[str, Tagged], term: str, where: str) -> set[str]:
    atoms = [atom.strip() for atom in term.split("+")]
    if not all(atoms):
        raise UsageError(
            f"Target selector part {term!r} has an empty side of '+'; write e.g. tag:prod+tag:eu"
        )
    found = _atom(targets, atoms[0], where)
    for atom in atoms[1:]:
        found &= _atom(targets, atom, where)
    return found


def _atom(targets: Mapping[str, Tagged], atom: str, where: str) -> set[str]:
    if atom.startswith(TAG_PREFIX):
        return _tagged(targets, atom[len(TAG_PREFIX) :].strip(), where)
    if _GLOB_CHARACTERS & set(atom):
        return {name for name in targets if fnmatchcase(name, atom)}
    if atom not in targets:
        raise UsageError(unknown_target(atom, targets, where))
    return {atom}


def _tagged(targets: Mapping[str, Tagged], tag: str, where: str) -> set[str]:
    known = target_tags(targets)
    if not TAG.fullmatch(tag):
        raise UsageError(
            f"'tag:{tag}' is not a tag: tags hold lower-case letters, digits, '-' and '_'; "
            f"tags in {where} are: {_listed(known)}"
        )
    if tag not in known:
        raise UsageError(f"Unknown tag '{tag}'; tags in {where} are: {_listed(known)}")
    return {name for name, target in targets.items() if tag in target.tags}


def _listed(names: Sequence[str] | Mapping[str, object]) -> str:
    return ", ".join(names) or "(none)"
