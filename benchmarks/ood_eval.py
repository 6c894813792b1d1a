"""Out-of-domain photos: does the caption name the main object, with and without guidance?

Usage: .venv/bin/python benchmarks/ood_eval.py [--checkpoint RUN_DIR] [--figure]

Captions the 58 photos of examples/out_of_domain (public domain / CC0, each with one caption and
its main object written down before any model output was seen) with the shipped model's decoder
alone and with classifier guidance (the shipped settings and the alternatives that were
measured), and reports per setting:

- right object: the share of captions containing a word of the photo's ``main_object_synonyms``
  (as a whole token or phrase, plural forms included);
- CIDEr-D against the one hand-written caption per photo (indicative: a single reference);
- dog on a photo without one: captions that say "dog" where the photo has none (Flickr8k's
  favourite subject, and the most common wrong thing these captions name);
- how many captions contain <unk> (must be 0) and how many were guided.

Writes benchmarks/results/ood_eval.json (the table and every caption) and, with ``--figure``,
benchmarks/results/ood_before_after.png. The helpers here (guide variants, guided decoding with
offline threshold/margin selection) are shared with flickr8k_eval.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.api import Captioner
from captioner.data.images import load_rgb_image
from captioner.data.text import tokenize_caption
from captioner.decoding import DecodeSettings, decode
from captioner.guidance import Guide
from captioner.guidance.words import KIND_STAND_INS, caption_words, plural
from captioner.metrics import score_captions
from captioner.training.evaluation import search_tokens

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "examples" / "out_of_domain"
RESULTS = ROOT / "benchmarks" / "results"
SHIPPED = "CBS, living subject (shipped)"
#: Guide options of each setting measured; the shipped one is Guide's defaults.
VARIANTS: dict[str, dict] = {
    "CBS": {"subject_within": None},
    SHIPPED: {},
    "CBS, any subject": {"subject_kinds": frozenset(KIND_STAND_INS)},
    "CBS, living subject, stand-ins for known words too": {"stand_in_known_words": True},
    "CBS, living subject, rule out the kind's stand-ins": {"rule_out_stand_ins": True},
}
FIGURE_PHOTOS = ("cat_tabby_closeup.jpg", "coffee_cup.jpg", "rocket_launch_pad.jpg", "koala.jpg",
                 "polar_bear.jpg", "frying_pan.jpg")


@dataclass
class GuidedRun:
    """Captions of a set of images decoded plainly and with a guide at its lowest threshold and
    no margin; ``select`` gives the captions of any higher threshold and any margin from them
    (decode() guarantees that an image's guided caption depends on nothing else)."""

    plain: list[str]
    plain_scores: list[float]
    guided: list[str]
    guided_scores: list[float]
    met: list[bool]
    confidence: list[float]
    word: list[str | None]
    labels: list[list[dict]]

    def select(self, threshold: float, margin: float = math.inf, trust: float = math.inf
               ) -> tuple[list[str], list[bool]]:
        """Captions at ``threshold``, ``margin`` and ``trust`` (what ``decode`` does with the
        guide's constraints), and which of them are guided."""
        used = [
            self.word[i] is not None and self.confidence[i] >= threshold and self.met[i]
            and (self.confidence[i] >= trust or self.guided_scores[i] >= self.plain_scores[i] - margin)
            for i in range(len(self.plain))
        ]
        return [g if u else p for g, p, u in zip(self.guided, self.plain, used)], used


def guided_run(captioner: Captioner, regions: torch.Tensor, guide: Guide | None, settings: DecodeSettings,
               chunk: int = 100) -> GuidedRun:
    tokens = search_tokens(captioner.vocabulary)
    settings = DecodeSettings(**{**settings.__dict__, "constraint_margin": math.inf})
    run = GuidedRun([], [], [], [], [], [], [], [])
    for start in range(0, len(regions), chunk):
        batch = regions[start : start + chunk].float()
        plain = decode(captioner.model.decoder, batch, tokens, settings)
        run.plain += [" ".join(captioner.vocabulary.decode(d.token_ids)) for d in plain]
        run.plain_scores += [d.score for d in plain]
        if guide is None:
            continue
        readings = guide.read(batch)
        guided = decode(captioner.model.decoder, batch, tokens, settings, [r.constraint for r in readings])
        for reading, caption in zip(readings, guided):
            run.guided.append(" ".join(guide.caption_words(caption, reading)))
            run.guided_scores.append(caption.score)
            run.met.append(bool(caption.constraint_met))
            run.confidence.append(reading.confidence)
            run.word.append(None if reading.word is None else reading.word.text)
            run.labels.append([label.to_dict() for label in reading.labels])
    if guide is None:
        n = len(run.plain)
        run.guided, run.guided_scores, run.met = list(run.plain), list(run.plain_scores), [False] * n
        run.confidence, run.word, run.labels = [0.0] * n, [None] * n, [[] for _ in range(n)]
    return run


def encode_photos(captioner: Captioner, paths: Sequence[Path], desc: str | None = None) -> torch.Tensor:
    """(N, R, D) regions of photo files, encoded as ``captioner caption`` encodes them, 50 at a
    time (with a progress bar when ``desc`` names the set)."""
    starts = range(0, len(paths), 50)
    regions = []
    with torch.inference_mode():
        for start in tqdm(starts, desc=desc, unit="batch") if desc else starts:
            pixels = torch.stack([captioner.model.encoder.preprocess(load_rgb_image(p)) for p in paths[start : start + 50]])
            regions.append(captioner.model.encode(pixels))
    return torch.cat(regions)


def word_forms(word: str) -> set[str]:
    known = caption_words().get(word)
    return {word, plural(word), known.plural if known is not None else word}


def names_object(caption: str, synonyms: Sequence[str]) -> bool:
    text = f" {' '.join(tokenize_caption(caption))} "
    return any(f" {form} " in text for synonym in synonyms for form in word_forms(synonym))


def mentions_dog(caption: str) -> bool:
    return bool({"dog", "dogs", "puppy", "puppies"} & set(tokenize_caption(caption)))


def summarise(captions: list[str], annotations: list[dict], guided: list[bool] | None = None) -> dict:
    references = {a["file"]: [a["caption"]] for a in annotations}
    candidates = {a["file"]: c for a, c in zip(annotations, captions)}
    right = sum(names_object(c, a["main_object_synonyms"]) for c, a in zip(captions, annotations))
    dogless = [(c, a) for c, a in zip(captions, annotations)
               if "dog" not in a["main_object_synonyms"] and "dog" not in tokenize_caption(a["caption"])]
    return {
        "right_object": right,
        "right_object_share": right / len(annotations),
        "CIDEr": score_captions(references, candidates, meteor=False).corpus["CIDEr"],
        "dog_without_dog": sum(mentions_dog(c) for c, _ in dogless),
        "photos_without_dog": len(dogless),
        "unk": sum("<unk>" in c.split() for c in captions),
        "guided": sum(guided or ()),
    }


def draw_figure(annotations: list[dict], before: list[str], after: list[str], path: Path) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [i for i, a in enumerate(annotations) if a["file"] in FIGURE_PHOTOS]
    figure, axes = plt.subplots(2, 3, figsize=(13, 11))
    for axis, index in zip(axes.flat, chosen):
        photo = load_rgb_image(PHOTOS / annotations[index]["file"])
        side = min(photo.size)  # square thumbnails keep the text rows aligned
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        axis.imshow(photo.crop((left, top, left + side, top + side)))
        axis.set_axis_off()
        wrap = lambda text: "\n".join(textwrap.wrap(text, 46))  # noqa: E731
        axis.set_title(f"{annotations[index]['file']}", fontsize=10, fontweight="bold")
        axis.text(0.0, -0.04, f"before: {wrap(before[index])}", transform=axis.transAxes, fontsize=9,
                  va="top", color="#a02020")
        axis.text(0.0, -0.16, f"after: {wrap(after[index])}", transform=axis.transAxes, fontsize=9,
                  va="top", color="#106010")
    figure.suptitle("Out-of-domain photos, shipped flickr8k-lite0, beam 3: decoder alone (before) and "
                    "with classifier guidance (after)", fontsize=11)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.09, wspace=0.08, hspace=0.42)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    # 256 colours keep the photos recognisable at a third of the size.
    from PIL import Image

    with Image.open(path) as drawn:
        quantised = drawn.convert("RGB").quantize(256)
    quantised.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                        help="Captioner precision (default: the model's own, eval.precision)")
    parser.add_argument("--thresholds", default="0.2,0.3,0.5", help="thresholds also tried with the shipped variant")
    parser.add_argument("--margins", default="inf,3.5,5.5",
                        help="margins also tried with the shipped variant, threshold and trust (inf: as shipped before)")
    parser.add_argument("--out", help="where to write the JSON (default: benchmarks/results/ood_eval.json)")
    parser.add_argument("--figure", action="store_true", help="also draw benchmarks/results/ood_before_after.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu", precision=args.precision)
    print(f"precision: {captioner.precision}")
    annotations = json.loads((PHOTOS / "annotations.json").read_text())
    regions = encode_photos(captioner, [PHOTOS / a["file"] for a in annotations])
    settings = captioner.default_settings(args.beam_size)
    threshold = captioner.config.eval.guidance_threshold
    trust = captioner.config.eval.guidance_trust
    margin = captioner.config.eval.guidance_margin
    margin = math.inf if margin is None else margin
    table: dict[str, dict] = {}
    started = time.perf_counter()
    plain_run = guided_run(captioner, regions, None, settings)
    table["decoder alone (before)"] = summarise(plain_run.plain, annotations)
    runs = {}
    for name, options in VARIANTS.items():
        guide = Guide.for_model(captioner.model.encoder, captioner.grid_size, captioner.vocabulary,
                                threshold=0.0, **options)
        runs[name] = guided_run(captioner, regions, guide, settings)
        captions, guided = runs[name].select(threshold, margin, trust)
        table[f"{name}, threshold {threshold}"] = summarise(captions, annotations, guided)
    for other in (float(t) for t in args.thresholds.split(",")):
        if other != threshold:
            captions, guided = runs[SHIPPED].select(other, margin, trust)
            table[f"{SHIPPED.split(' (')[0]}, threshold {other}"] = summarise(captions, annotations, guided)
    for other in (float(m) for m in args.margins.split(",")):
        captions, guided = runs[SHIPPED].select(threshold, other, trust)
        table[f"{SHIPPED.split(' (')[0]}, threshold {threshold}, trust {trust}, margin {other}"] = summarise(
            captions, annotations, guided)
    print(f"decoded {len(VARIANTS) + 1} settings in {time.perf_counter() - started:.0f} s")
    for name, row in table.items():
        print(f"{name:70s} right object {row['right_object']}/{len(annotations)} ({row['right_object_share']:.1%})  "
              f"CIDEr-D {row['CIDEr']:.3f}  dog without dog {row['dog_without_dog']}/{row['photos_without_dog']}  "
              f"<unk> {row['unk']}  guided {row['guided']}")
    shipped = runs[SHIPPED]
    after, used = shipped.select(threshold, margin, trust)
    # The ceiling guidance works under: photos whose classifier top category maps to a word that
    # names the main object (guidance can only add the word it is given).
    top_names = [bool(labels) and labels[0]["word"] is not None
                 and names_object(labels[0]["word"], a["main_object_synonyms"])
                 for labels, a in zip(shipped.labels, annotations)]
    print(f"classifier's top category names the main object: {sum(top_names)}/{len(annotations)}")
    photos = [
        {"file": a["file"], "main_object": a["main_object"], "reference": a["caption"],
         "before": plain_run.plain[i], "after": after[i], "guided_by": shipped.word[i] if used[i] else None,
         "labels": shipped.labels[i],
         "before_names_object": names_object(plain_run.plain[i], a["main_object_synonyms"]),
         "after_names_object": names_object(after[i], a["main_object_synonyms"])}
        for i, a in enumerate(annotations)
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / "ood_eval.json"
    out.write_text(json.dumps({"machine": describe_machine(), "beam_size": args.beam_size,
                               "threshold": threshold, "trust": trust, "margin": None if math.isinf(margin) else margin,
                               "classifier_top_category_names_object": sum(top_names),
                               "table": table, "photos": photos}, indent=2) + "\n")
    print(f"wrote {out}")
    if args.figure:
        draw_figure(annotations, plain_run.plain, after, RESULTS / "ood_before_after.png")
        print(f"wrote {RESULTS / 'ood_before_after.png'}")


if __name__ == "__main__":
    main()
