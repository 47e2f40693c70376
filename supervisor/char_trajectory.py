"""The chunk engine's trajectory: the response as text, positions as character offsets."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class CharTrajectory:
    """The response as text, with the cumulative token count at each piece boundary (a
    :class:`~supervisor.core.Trajectory` whose positions are character offsets).

    A delta longer than ``piece_tokens`` is cut into pieces at spaces, with token counts shared out by
    length, so that checkpoints and scored windows keep their size whatever the upstream's delta sizes.
    """

    piece_tokens: int = 1 << 30
    response: str = ""
    bounds: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])

    @property
    def end(self) -> int:
        return len(self.response)

    @property
    def tokens(self) -> int:
        return self.bounds[-1][1]

    def text(self, start: int, end: int) -> str:
        return self.response[start:end]

    def append(self, text: str, tokens: int) -> None:
        start, base = len(self.response), self.tokens
        self.response += text
        pieces = -(-tokens // self.piece_tokens)
        cuts: list[int] = []
        for k in range(1, pieces):
            target = len(text) * k // pieces
            space = text.find(" ", target)
            cut = space if 0 < space < len(text) else target
            if cut > (cuts[-1] if cuts else 0):
                cuts.append(cut)
        for cut in cuts:
            self.bounds.append((start + cut, base + tokens * cut // len(text)))
        self.bounds.append((len(self.response), base + tokens))

    # Both coordinates of ``bounds`` only grow, so lookups bisect (they run on every delta).
    def _index_at(self, char_offset: int) -> int:
        return bisect.bisect_right(self.bounds, char_offset, key=lambda bound: bound[0]) - 1

    def tokens_at(self, char_offset: int) -> int:
        index = self._index_at(char_offset)
        return self.bounds[index][1] if index >= 0 else 0

    def window_start(self, end: int, tokens: int) -> int:
        limit = self.tokens_at(end) - tokens
        index = bisect.bisect_right(self.bounds, limit, key=lambda bound: bound[1]) - 1
        return self.bounds[index][0] if index >= 0 else 0

    def is_word_start(self, char_offset: int) -> bool:
        if char_offset <= 0:
            return True
        if char_offset > len(self.response):
            return False
        if self.response[char_offset - 1].isspace():
            return True
        return char_offset < len(self.response) and self.response[char_offset].isspace()

    def checkpoints_after(self, char_offset: int, every: int) -> list[int]:
        due: list[int] = []
        last = self.tokens_at(char_offset)
        for offset, tokens in self.bounds[self._index_at(char_offset) + 1:]:
            if tokens - last >= every:
                due.append(offset)
                last = tokens
        return due

    def truncate(self, char_offset: int) -> None:
        self.response = self.response[:char_offset]
        self.bounds = [(c, t) for c, t in self.bounds if c <= char_offset]
