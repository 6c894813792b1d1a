"""Does ``captioner.tokenization`` tokenize exactly as pycocoevalcap's Java PTBTokenizer?

Usage: .venv/bin/python benchmarks/ptb_tokenizer_parity.py [--fuzz 20000] [--seed 0] [--show 10]

Runs pycocoevalcap 1.2's own ``PTBTokenizer`` (Stanford CoreNLP 3.4.1, Java) over every caption
of ``<repo>/../shared/datasets/flickr8k/Flickr8k.token.txt`` as one batch in file order, and our
``tokenize_captions`` over the same batch, then counts the captions whose token strings differ
(target: 0) and prints the first few. ``--fuzz N`` adds N random captions built from tricky
pieces (contractions, abbreviations, numbers, URLs, quotes, brackets, smileys, SGML, Unicode
punctuation...) as a second batch. Needs Java and pycocoevalcap.
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import sys
import time
from pathlib import Path

from captioner.metrics.tokenizer import tokenize_captions

ROOT = Path(__file__).resolve().parents[1]
TOKEN_FILE = ROOT / ".." / "shared" / "datasets" / "flickr8k" / "Flickr8k.token.txt"

_WORDS = ("a A the The dog Dog DOG man's dogs' it's can't won't don't I'm you're cannot gonna "
          "wanna x y St Mr Mrs Dr U.S. e.g. i.e. etc Jan No no vs Inc Co Ltd t-shirt "
          "well-dressed 3-year-old o'clock rock'n'roll Ma'am y'all ain't isn't Inc. No. fig. "
          "p.m. a.m. D.C. Jr. Jan. St. Mr. Washington Co. etc. 's n't 'll photo.jpg file.txt "
          "2.x x").split()
_NUMBERS = ("1 5 10 3.5 1,000 5:30 1/2 2nd 3rd 90s '90s 1990's 555-1234 2003 -5 +3 $5 #1 50% 4x4 "
            "24/7 1-2 3-4 10:30 3/4 1/2/2003 .5 (555)").split()
_PUNCTUATION = [*".,;:!?-'\"()[]{}<>/\\*&@#$%^_=+~`|", "...", "--", "---", "''", "``", ". . .", "?!",
                "!!", ":)", ";)", ":-)", ":-(", "=D", "^_^", "&amp;", "&lt;", "<b>", "</b>", "<br />"]
_UNICODE = ["\u2019", "\u2018", "\u201c", "\u201d", "\u2014", "\u2013", "\u2026", "caf\u00e9",
            "na\u00efve", "\u00bd", "\u00a3", "\u20ac", "\u00e9t\u00e9", "\u00a0", "\u00b0",
            "\u00d7", "\u2022", "\u00ad"]
_URLS = ["www.google.com", "http://x.org/a", "me@x.com", "@user", "#tag", "google.com"]


def fuzz_captions(count: int, seed: int) -> list[str]:
    """Random captions made of pieces that exercise many PTB lexer rules."""
    rng = random.Random(seed)
    pool = _WORDS * 3 + _NUMBERS + _PUNCTUATION * 2 + _URLS + _UNICODE * 2
    captions = []
    for _ in range(count):
        pieces = []
        for _ in range(rng.randint(1, 8)):
            pieces += [rng.choice(pool), rng.choice(["", " ", " ", " ", "  "])]
        captions.append("".join(pieces).strip())
    return captions


def compare(captions: list[str], show: int) -> tuple[int, float, float]:
    """(differing captions, our seconds, Java seconds) for one batch."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    batch = {i: [caption] for i, caption in enumerate(captions)}
    start = time.perf_counter()
    ours = tokenize_captions(batch)
    our_seconds = time.perf_counter() - start
    start = time.perf_counter()
    java = PTBTokenizer().tokenize({i: [{"caption": c} for c in v] for i, v in batch.items()})
    java_seconds = time.perf_counter() - start
    differing = [i for i in batch if ours.get(i) != java.get(i)]
    for i in differing[:show]:
        print(f"  caption {captions[i]!r}\n    java {java.get(i)}\n    ours {ours.get(i)}")
    return len(differing), our_seconds, java_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=0, help="also compare N random tricky captions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=10, help="print the first N differences")
    args = parser.parse_args()
    if shutil.which("java") is None:
        print("needs java on PATH (pycocoevalcap's tokenizer is Java)", file=sys.stderr)
        return 2
    if not TOKEN_FILE.is_file():
        print(f"needs {TOKEN_FILE}", file=sys.stderr)
        return 2

    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    lines = TOKEN_FILE.read_text(encoding="utf-8").splitlines()
    captions = [line.split("\t", 1)[1] for line in lines]
    differing, ours, java = compare(captions, args.show)
    print(f"Flickr8k.token.txt: {differing} of {len(captions)} captions differ "
          f"(ours {ours:.2f} s, Java PTBTokenizer via pycocoevalcap {java:.2f} s)")
    failures = differing
    if args.fuzz:
        differing, ours, java = compare(fuzz_captions(args.fuzz, args.seed), args.show)
        print(f"fuzz (seed {args.seed}): {differing} of {args.fuzz} random captions differ")
        failures += differing
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
