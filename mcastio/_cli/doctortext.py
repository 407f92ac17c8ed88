"""``mcastio doctor``'s findings for a person: one block per kind of finding.

A healthy three-link host used to get the same six-line fix once per
interface. Findings that say the same thing about several interfaces (the
same id and severity, the same message and fix but for the interface's name)
print as one block: the interfaces in its head, the message and fix once
with ``IF`` standing for each of them, and every interface's evidence.
``--json`` keeps one finding per interface.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from .findings import Finding
from .fmt import WIDTH
from .remedies import KEEP_ALIVE_FIX

__all__ = ["finding_text", "findings_text"]


def _template(text: str, name: str | None) -> str:
    if not name:
        return text
    return re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", "IF", text)


def _block(head: Finding, names: list[str], message: str, fix: str, evidence: list[str]) -> str:
    where = f" [{', '.join(names)}]" if names else ""
    lines = [f"{head.severity.upper():<8}{head.id}{where}"]
    lines += textwrap.wrap(message, WIDTH, initial_indent="  ", subsequent_indent="  ")
    for item in evidence:
        lines += textwrap.wrap(item, WIDTH, initial_indent="  - ", subsequent_indent="    ")
    if fix:
        lines += textwrap.wrap(fix, WIDTH, initial_indent="  fix: ", subsequent_indent="       ")
    return "\n".join(lines)


def finding_text(finding: Finding) -> str:
    names = [finding.interface] if finding.interface else []
    return _block(finding, names, finding.message, finding.fix, list(finding.evidence))


def _own(fix: str) -> str:
    return fix.replace(KEEP_ALIVE_FIX, "(And see the note at the end.)").strip()


def findings_text(findings: Sequence[Finding]) -> list[str]:
    """One text block per group of findings that differ only in their interface."""
    groups: dict[tuple[str, str, str, str], list[Finding]] = {}
    for f in findings:
        key = (f.id, f.severity, _template(f.message, f.interface), _template(f.fix, f.interface))
        groups.setdefault(key, []).append(f)
    blocks = []
    shared = False
    for (_id, _severity, message, fix), members in groups.items():
        if KEEP_ALIVE_FIX in fix:
            # The same remedy closes several findings: said once, at the end.
            fix = fix.replace(KEEP_ALIVE_FIX, "(And see the note at the end.)").strip()
            shared = True
        if len(members) == 1:
            f = members[0]
            names = [f.interface] if f.interface else []
            blocks.append(_block(f, names, f.message, _own(f.fix), list(f.evidence)))
            continue
        names = [f.interface for f in members if f.interface]
        evidence = list(dict.fromkeys(e for f in members for e in f.evidence))
        message = f"{message} (IF: each of {', '.join(names)}.)"
        blocks.append(_block(members[0], names, message, fix, evidence))
    if shared:
        blocks.append(
            "\n".join(textwrap.wrap("NOTE    " + KEEP_ALIVE_FIX, WIDTH, subsequent_indent="  "))
        )
    return blocks
