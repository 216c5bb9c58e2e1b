"""Just enough PEP 440 to decide whether an installed version satisfies a requirement.

Used where duckserve must answer "does this version do?" itself, without installing anything:
whether the SQL session's own Python (the warehouse) can run a model, and which of the local CPU
builds of torch satisfies a model's torch requirement. Release numbers, pre/post/dev tags and local
labels (``2.13.0+cpu``) are understood; a specifier without a local label ignores the candidate's
local label, as PEP 440 says.
"""

from __future__ import annotations

import re
from functools import total_ordering

_VERSION = re.compile(
    r"^\s*v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre_l>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>\d+)?)?"
    r"(?:(?:-(?P<post_n1>\d+))|(?:[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>\d+)?))?"
    r"(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>\d+)?)?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?\s*$",
    re.IGNORECASE,
)
_CLAUSE = re.compile(r"^\s*(===|==|!=|~=|>=|<=|>|<)?\s*(.+?)\s*$")


@total_ordering
class Version:
    """A parsed version; compares by PEP 440 order (the local label only breaks ties)."""

    def __init__(self, text: str) -> None:
        match = _VERSION.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a version")
        self.text = text.strip()
        self.epoch = int(match["epoch"] or 0)
        self.release = tuple(int(p) for p in match["release"].split("."))
        pre_label = (match["pre_l"] or "").lower()
        pre_label = {"alpha": "a", "beta": "b", "c": "rc", "pre": "rc", "preview": "rc"}.get(pre_label, pre_label)
        self.pre = (pre_label, int(match["pre_n"] or 0)) if pre_label else None
        post = match["post_n1"] or match["post_n2"] or ("0" if match["post_l"] else None)
        self.post = int(post) if post is not None else None
        self.dev = int(match["dev_n"] or 0) if match["dev_l"] else None
        self.local = (match["local"] or "").lower().replace("-", ".").replace("_", ".") or None

    @property
    def public(self) -> Version:
        return Version(self.text.split("+")[0])

    def _key(self) -> tuple[object, ...]:
        release = self.release
        while len(release) > 1 and release[-1] == 0:
            release = release[:-1]
        # order: dev < pre < final < post (a dev release of a final comes before its pre-releases)
        if self.pre is None and self.post is None and self.dev is not None:
            pre: tuple[object, ...] = ("", -1)
        elif self.pre is None:
            pre = ("z", 0)
        else:
            pre = self.pre
        post = -1 if self.post is None else self.post
        dev = float("inf") if self.dev is None else self.dev
        local = tuple((0, int(p)) if p.isdigit() else (-1, p) for p in (self.local or "").split(".") if p)
        return (self.epoch, release, pre, post, dev, local)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Version({self.text!r})"


def _padded(release: tuple[int, ...], width: int) -> tuple[int, ...]:
    return release + (0,) * (width - len(release))


def _clause_matches(version: Version, operator: str, target: str) -> bool:
    if operator == "===":
        return version.text == target
    if target.endswith(".*"):
        prefix = Version(target[:-2]).release
        head = _padded(version.release, len(prefix))[: len(prefix)]
        matched = head == prefix
        return matched if operator == "==" else not matched
    wanted = Version(target)
    candidate = version if wanted.local else version.public
    if operator in ("==", "!="):
        same = _padded(candidate.release, len(wanted.release)) == _padded(wanted.release, len(candidate.release)) \
            and candidate._key()[2:] == wanted._key()[2:] and candidate.epoch == wanted.epoch
        return same if operator == "==" else not same
    if operator == "~=":
        if len(wanted.release) < 2:
            raise ValueError(f"~={target} needs at least two release numbers")
        prefix = wanted.release[:-1]
        return candidate >= wanted and _padded(candidate.release, len(prefix))[: len(prefix)] == prefix
    public = version.public
    if operator == ">=":
        return public >= wanted
    if operator == "<=":
        return public <= wanted
    if operator == ">":
        return public > wanted and not (wanted.post is None and public.post is not None
                                        and public.release == wanted.release)
    # "<": a pre-release of the bound itself does not count as lower
    return public < wanted and not (public.pre is not None and wanted.pre is None
                                    and _padded(public.release, 3) == _padded(wanted.release, 3))


def satisfies(version: str, specifier: str) -> bool:
    """Does ``version`` (``2.13.0+cpu``) satisfy ``specifier`` (``>=2.0,<3``, ``==2.13.*``, empty)?

    ValueError when either does not parse."""
    parsed = Version(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        match = _CLAUSE.match(clause)
        if not match:
            raise ValueError(f"{clause!r} is not a version specifier")
        operator, target = match[1] or "==", match[2]
        if not _clause_matches(parsed, operator, target):
            return False
    return True


def best_match(versions: list[str], specifier: str) -> str | None:
    """The highest of ``versions`` that satisfies ``specifier``, or None."""
    good = [v for v in versions if satisfies(v, specifier)]
    return max(good, key=Version) if good else None
