"""The Holdback buffer: text reaches the user only once checked, and is never retracted."""

from __future__ import annotations


class Holdback:
    """Tracks what was released. ``release(prefix)`` hands out only the part not yet released.

    The session passes the decoded response up to a passed checkpoint. If a tokenizer ever decoded
    a prefix that is not an extension of what was already shown (it should not), nothing is
    released rather than something retracted.
    """

    def __init__(self) -> None:
        self._released = ""
        self.withheld_inconsistent = 0

    @property
    def released(self) -> str:
        return self._released

    def release(self, prefix: str) -> str:
        if self._released.startswith(prefix):
            return ""
        if not prefix.startswith(self._released):
            self.withheld_inconsistent += 1
            return ""
        delta = prefix[len(self._released):]
        self._released = prefix
        return delta

    def append(self, text: str) -> str:
        """Release text that is not model output (the halt message)."""
        self._released += text
        return text
