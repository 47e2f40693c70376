"""What folding a check window into visible text costs: ``supervisor.visible_text.visible`` on 200-character
windows of plain and non-ASCII text, next to what the lexical model itself takes on the same window.

    python benchmarks/visible_text.py [--repeat 7] [--width 200]

``visible`` runs on every window the supervisor scores (in ``assess_checked``). Target: a few microseconds
on plain ASCII (the fast path), well under 100 us on non-ASCII. Each figure is the best of ``--repeat``
timings (the machine is noisy; the best is the cost, the rest is interference). Prints a Markdown table and
writes benchmarks/results/visible_text.json.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import publish  # noqa: E402
from supervisor.scorers.lexical import profanity_model  # noqa: E402
from supervisor.visible_text import obfuscation_variant, visible  # noqa: E402

SAMPLES = {
    "ascii prose": "The weather is mild today and the park is open for everyone to enjoy a quiet walk by the river. ",
    "ascii with a spaced-letter run": "Well, I have a b c here, and you are a f u c k i n g idiot, said the man. ",
    "ascii leetspeak": "You are such a sh1t head and a b!tch, said the a$$hole in 2024 to everyone. ",
    "latin accents": "Le café est très agréable aujourd’hui, et le parc est ouvert à tous pour une promenade. ",
    "cyrillic": "Погода сегодня мягкая, и парк открыт для всех, чтобы насладиться тихой прогулкой. ",
    "cjk and emoji": "今天天气很好，公园对所有人开放。我们去散步吧！😀👍 ",
    "emoji zwj sequences": "Family time 👨\u200d👩\u200d👧 and hearts ❤\ufe0f for everyone at the picnic today. ",
    "obfuscated (every trick)": "\u202ekcuf\u202c you f\u200bu\u200bck ｆｕｃｋ f u c k fu\u0441k f\u0336u\u0336c\u0336k ",
}


def window(sample: str, width: int) -> str:
    return (sample * (width // len(sample) + 1))[:width]


def best_us(call: Any, repeat: int) -> float:
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--width", type=int, default=200, help="characters per window")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "visible_text.json"))
    args = parser.parse_args(argv)

    model = profanity_model()
    visible("warm up: é")  # builds the character tables once (about 20 ms)
    table: list[dict[str, Any]] = []
    for name, sample in SAMPLES.items():
        text = window(sample, args.width)
        seen = visible(text)
        table.append({
            "window": name,
            "chars": len(text),
            "ascii": text.isascii(),
            "changed": seen != text,
            "visible_us": best_us(lambda text=text: visible(text), args.repeat),
            "obfuscation_variant_us": best_us(lambda seen=seen: obfuscation_variant(seen), args.repeat),
            "lexical_model_us": best_us(lambda text=text: model.probabilities([text]), args.repeat),
        })
    lines = [
        f"visible() on {args.width}-character windows; best of {args.repeat} timings, per window",
        "",
        "| window | ascii | changed | visible() | obfuscation_variant() | lexical model alone |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(f"| {row['window']} | {'yes' if row['ascii'] else 'no'} | {'yes' if row['changed'] else 'no'} | "
                     f"{row['visible_us']:.1f} us | {row['obfuscation_variant_us']:.1f} us | "
                     f"{row['lexical_model_us']:.1f} us |")
    publish(lines, args.out, {"settings": vars(args), "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
