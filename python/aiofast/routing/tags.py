"""Request tags: the ``x-aiofast-tags`` header, facts that routing rules can match.

A client labels one request with comma-separated tags, each ``name`` or ``name=value``
(``x-aiofast-tags: batch, team=search``). Rules match them with ``tags_any`` and
``tags_all`` alongside the labels of the caller's key. The header comes from the client,
so it is bounded (count and length) and a tag never overrides a label of the key: a tag
whose name is one of the key's labels is dropped, the key's value stands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from aiofast.refusals import RequestRefused, bad_request

__all__ = [
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "TAGS_HEADER",
    "check_tags",
    "parse_tags",
    "route_tags",
]

TAGS_HEADER = "x-aiofast-tags"
MAX_TAGS = 16
MAX_TAG_LENGTH = 128
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
_TAG = re.compile(rf"({_NAME})(?:=([A-Za-z0-9_.:/@+-]+))?")


def parse_tags(header: str | None) -> list[str]:
    """The tags of one header value, in order and without duplicates; a 400 naming the
    header when one is malformed or there are too many."""
    if header is None or not header.strip():
        return []
    return check_tags([part.strip() for part in header.split(",")])


def check_tags(tags: Sequence[str], source: str = f"{TAGS_HEADER} header") -> list[str]:
    """``tags`` in order and without duplicates, after the checks the header gets; a 400
    naming ``source`` when one is malformed or there are too many."""
    if len(tags) > MAX_TAGS:
        raise _invalid(source, f"at most {MAX_TAGS} tags are allowed, got {len(tags)}")
    checked: list[str] = []
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH:
            problem = f"tag {tag[:20]!r}... is longer than {MAX_TAG_LENGTH} characters"
            raise _invalid(source, problem)
        if _TAG.fullmatch(tag) is None:
            raise _invalid(
                source,
                f"{tag!r} is not a tag; write `name` or `name=value` (letters, digits and "
                "_.:- in names, no spaces), separated by commas",
            )
        if tag not in checked:
            checked.append(tag)
    return checked


def route_tags(labels: Mapping[str, str], tags: list[str]) -> list[str]:
    """The tags facts of a request: the key's labels as ``name=value``, then the
    request's own tags whose name is not a label of the key."""
    facts = [f"{name}={value}" for name, value in labels.items()]
    facts.extend(tag for tag in tags if tag.partition("=")[0] not in labels)
    return facts


def _invalid(source: str, problem: str) -> RequestRefused:
    return bad_request(f"Invalid {source}: {problem}", param=source.split()[0])
