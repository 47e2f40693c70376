"""The text as a person reads it, for measuring only (never shown to users).

A screen hides much of what a string holds: format characters draw nothing, a right-to-left override
shows ``"\\u202ekcuf"`` as "fuck", fullwidth and Cyrillic letters look Latin, overlays and spaced
letters read as the word they decorate. A scorer that reads the raw string misses all of these;
:func:`visible` undoes them so the scorer measures what the user will see.
"""

from __future__ import annotations

import functools
import re
import unicodedata

_SURROGATE = re.compile("[\ud800-\udfff]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")

_RLO, _LRO, _RLE, _LRE, _PDF = "\u202e", "\u202d", "\u202b", "\u202a", "\u202c"
_ISOLATES, _PDI = frozenset("\u2066\u2067\u2068"), "\u2069"
_OPENERS = frozenset((_RLO, _LRO, _RLE, _LRE)) | _ISOLATES
_LINE_ENDS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # what str.splitlines splits on
_HIDDEN = frozenset(("Cf", "Mn", "Me"))
_MAX_DEPTH = 125  # the Unicode bidi algorithm's limit; deeper openers only count, as there

_BIDI_SPLIT = re.compile("([\u202a-\u202e\u2066-\u2069\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029])")

# After a character of these blocks (Hebrew to Vedic, U+0590-U+1CFF: Arabic, Indic, Thai, Tibetan, ...; and
# U+A800-U+D7FF: more Indic, Javanese, Hangul) a combining mark is part of the spelling (vowel signs,
# viramas) and multilingual scorers need it. After Latin, Greek, Cyrillic, symbols or spaces a mark that NFKC
# did not compose into its letter is decoration: strike-through overlays, "zalgo" stacks.
_MARKS_BELONG = "\u0590-\u1cff\ua800-\ud7ff"

_LETTER = r"[^\W\d_]"
_SEPARATOR = r"[ .\-_*~\u00b7]"
_SPACED = re.compile(rf"(?<![^\W_]){_LETTER}(?P<sep>{_SEPARATOR}){_LETTER}(?:(?P=sep){_LETTER})+(?![^\W_])")
_SPACED_HINT = re.compile(f"{_SEPARATOR}{_LETTER}{_SEPARATOR}{_LETTER}" r"(?![^\W_])")  # a run's inside: cheap
# Latin, Greek and Cyrillic letters only: NFKC composes none of them with a neighbour, so joining keeps the
# text normal (joined Hangul jamo would compose).
_SPACED_LETTERS_BELOW = "\u0530"

_LOOKALIKES = {
    # Cyrillic
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ӏ": "l",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S", "Ӏ": "I", "Ԛ": "Q", "Ԝ": "W",
    # Greek
    "α": "a", "γ": "y", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "ϳ": "j",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin letters from IPA that read as plain ones
    "ɡ": "g", "ɑ": "a",
}
_LOOKALIKE_TABLE = str.maketrans(_LOOKALIKES)
_LOOKALIKE = re.compile("[" + "".join(_LOOKALIKES) + "]")
_LATIN = re.compile("[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]")
_LOOKALIKE_WORD = re.compile(r"(?<![^\W_])[^\W_]*[" + "".join(_LOOKALIKES) + r"][^\W_]*")

_SUBSTITUTES = "013457@$!|+"  # read as letters in leetspeak
_LEET = str.maketrans(_SUBSTITUTES, "oieastasiit")
_TOKEN_CHARS = "A-Za-z0-9@$!|+"
_LEET_ANY = re.compile(f"[{_SUBSTITUTES}]")
_LEET_MIXED = re.compile(f"[A-Za-z][{_SUBSTITUTES}]|[{_SUBSTITUTES}][A-Za-z]")
_LEET_TOKEN = re.compile(f"(?<![{_TOKEN_CHARS}])[{_TOKEN_CHARS}]*[{_SUBSTITUTES}][{_TOKEN_CHARS}]*")


def visible(text: str) -> str:
    """``text`` as a screen shows it, folded for measuring: NFKC, bidi overrides in visual order, no format
    characters, no decorating combining marks, Latin look-alikes in Latin words made Latin, spelled-out
    letters ("f u c k", "f.u.c.k") joined. Idempotent; never raises (lone surrogates become U+FFFD)."""
    if text.isascii():
        return _join_spaced(text)
    if _SURROGATE.search(text) is not None:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    text = unicodedata.normalize("NFKC", text)
    if _RLO in text:
        text = unicodedata.normalize("NFKC", _visual_order(text))
    for _ in range(8):  # removing a character can let NFKC compose its neighbours; two rounds are the rule
        stripped = _strip_invisible(text)
        if stripped == text:
            break
        text = unicodedata.normalize("NFKC", stripped)
    text = _join_spaced(text)
    if _LOOKALIKE.search(text) is not None and _LATIN.search(text) is not None:
        text = _LOOKALIKE_WORD.sub(_latin_word, text)
    return text


def obfuscation_variant(text: str) -> str | None:
    """``text`` with leetspeak read as letters (``4@``->a, ``3``->e, ``1!|``->i, ``0``->o, ``5$``->s, ``7+``->t)
    in words that mix letters with those digits or symbols, or None when there is none. For lexical models
    only: "sh1t" is "shit" to a reader, but a number ("2024", "3.14") is not a word. A word needs at least
    as many letters as substitutions ("45s" stays a number of records), and ``!``, ``+`` or ``|`` at its end
    is punctuation ("hello!", "C++")."""
    if _LEET_ANY.search(text) is None or _LEET_MIXED.search(text) is None:
        return None
    variant = _LEET_TOKEN.sub(_leet_word, text)
    return variant if variant != text else None


def _leet_word(match: re.Match[str]) -> str:
    token = match.group()
    core = token.rstrip("!+|")
    substitutions = sum(char in _SUBSTITUTES for char in core)
    letters = sum(char.isalpha() for char in core)
    if substitutions == 0 or letters < max(1, substitutions):
        return token
    return core.translate(_LEET) + token[len(core):]


def _visual_order(text: str) -> str:
    """Bidi controls resolved for Latin text: what a right-to-left override holds (up to its PDF or the end
    of the line) in reverse; embeddings, isolates and a left-to-right override keep their order. Every
    embedding, override and isolate control is dropped; the marks (LRM, RLM, ALM) go with the other format
    characters."""
    root = _Run("")
    stack = [root]
    overflow = 0
    for index, piece in enumerate(_BIDI_SPLIT.split(text)):
        if index % 2 == 0:  # text between controls
            if piece:
                stack[-1].parts.append(piece)
        elif piece in _OPENERS:
            if len(stack) > _MAX_DEPTH:
                overflow += 1
                continue
            run = _Run("R" if piece == _RLO else "I" if piece in _ISOLATES else "L")
            stack[-1].parts.append(run)
            stack.append(run)
        elif piece == _PDF:
            if overflow:
                overflow -= 1
            elif len(stack) > 1 and stack[-1].kind != "I":  # a PDF does not close across an isolate
                stack.pop()
        elif piece == _PDI:
            overflow = 0
            if any(run.kind == "I" for run in stack):
                while stack.pop().kind != "I":
                    pass
        else:  # the end of a line closes everything
            overflow = 0
            del stack[1:]
            root.parts.append(piece)
    return root.render()


class _Run:
    """A stretch of text between a bidi opener and its closer: ``kind`` "R" (a right-to-left override, shown
    reversed), "L" (an embedding or left-to-right override) or "I" (an isolate); "" for the whole line."""

    __slots__ = ("kind", "parts")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.parts: list[str | _Run] = []

    def render(self) -> str:
        if self.kind != "R":
            return "".join(part if isinstance(part, str) else part.render() for part in self.parts)
        return "".join(part[::-1] if isinstance(part, str) else part.render() for part in reversed(self.parts))


@functools.cache
def _categories(astral: bool) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Patterns for format characters (Cf), for combining marks (Mn, Me), and for the marks to remove (those
    not after a character of _MARKS_BELONG or after a kept mark); built once from this Python's Unicode tables
    (about 20 ms). ``astral``: also above U+FFFF, where the pattern is a list of ranges (re tests a BMP-only
    class as a bitmap, ten times faster)."""
    formats: list[int] = []
    marks: list[int] = []
    codes = [*range(0x20000), *range(0xE0000, 0xE1000)] if astral else range(0x10000)  # no Cf, Mn, Me between
    for code in codes:
        category = unicodedata.category(chr(code))
        if category == "Cf":
            formats.append(code)
        elif category in _HIDDEN:
            marks.append(code)
    format_class, mark_class = _char_class(formats), _char_class(marks)
    decoration = f"(?<![{_MARKS_BELONG}{mark_class[1:-1]}]){mark_class}+"
    return re.compile(format_class), re.compile(mark_class), re.compile(decoration)


def _char_class(codes: list[int]) -> str:
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return "[" + "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                         for a, b in ranges) + "]"


def _strip_invisible(text: str) -> str:
    """``text`` without format characters and without the marks that only decorate (see _MARKS_BELONG)."""
    astral = any(unicodedata.category(char) in _HIDDEN for char in _ASTRAL.findall(text))  # emoji are not
    formats, marks, decoration = _categories(astral)
    if formats.search(text) is not None:
        text = formats.sub("", text)
    return text if marks.search(text) is None else decoration.sub("", text)


def _join_spaced(text: str) -> str:
    return text if _SPACED_HINT.search(text) is None else _SPACED.sub(_joined, text)


def _joined(match: re.Match[str]) -> str:
    run, separator = match.group(), match.group("sep")
    if separator == " " and run[0] in "aAI" and len(run) >= 7:
        # "you are a b i t c h": the article stays a word (a reader reads "a bitch", not "abitch")
        return run[0] + " " + _joined_text(run[2:], separator)
    return _joined_text(run, separator)


def _joined_text(run: str, separator: str) -> str:
    letters = run.replace(separator, "")
    return letters if max(letters) < _SPACED_LETTERS_BELOW else run


def _latin_word(match: re.Match[str]) -> str:
    word = match.group()
    if _LATIN.search(word) is None:
        return word  # a word wholly in Cyrillic or Greek is what it looks like
    return word.translate(_LOOKALIKE_TABLE)
