"""Cut Flickr8k's photos into gitignored folders small enough for one call to the GPU machine each.

Usage: .venv/bin/python benchmarks/make_gpu_flickr8k_parts.py [--data ../shared/datasets/flickr8k]
           [--part-mb 39] [--first-parts-mb 20[,13.5]]

Writes .f8k_part1 ... .f8k_partN (each: images/ and, in the first, the caption and split files)
and lists them in .git/info/exclude. The first parts are smaller because their calls also carry
.gpu_carry's weights packages (Lite0's with the first, Lite2's with the second). Sizes are counted in 4 KiB disk blocks, as the machine's limit
(64 MiB a call, the working tree included) counts them: --part-mb is 64 MiB minus the tree's
`du`, minus a margin.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "flickr8k"))
    parser.add_argument("--part-mb", type=float, default=39.0)
    parser.add_argument("--first-parts-mb", default="20",
                        help="comma-separated sizes of the first parts, whose calls also carry weights packages")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images of each split (smoke tests)")
    args = parser.parse_args()
    data = Path(args.data)
    splits = ["Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt"]
    names: list[str] = []
    for split in splits:
        listed = [line.strip() for line in (data / split).read_text().splitlines() if line.strip()]
        names += listed[: args.limit] if args.limit else listed
    for old in ROOT.glob(".f8k_part*"):
        shutil.rmtree(old)
    exclude = ROOT / ".git" / "info" / "exclude"
    if "/.f8k_part*/" not in exclude.read_text():
        with exclude.open("a") as handle:
            handle.write("/.f8k_part*/\n")
    first_parts = [float(size) * 1e6 for size in args.first_parts_mb.split(",")]

    def capacity_of(part: int) -> float:
        return first_parts[part - 1] if part <= len(first_parts) else args.part_mb * 1e6

    part, used, capacity = 1, 0, capacity_of(1)
    target = ROOT / f".f8k_part{part}"
    (target / "images").mkdir(parents=True)
    text_files = [data / "Flickr8k.token.txt", *(data / s for s in splits)]
    for text in text_files:
        if args.limit:
            keep = set(names)
            lines = (data / text.name).read_text().splitlines()
            if text.name == "Flickr8k.token.txt":
                lines = [line for line in lines if line.split("#")[0] in keep]
            else:
                lines = [line for line in lines if line.strip() in keep]
            (target / text.name).write_text("\n".join(lines) + "\n")
        else:
            shutil.copy(text, target / text.name)
        used += (target / text.name).stat().st_size
    for name in names:
        size = -(-(data / "images" / name).stat().st_size // 4096) * 4096  # the machine counts disk blocks
        if used + size > capacity:
            part, used, capacity = part + 1, 0, capacity_of(part + 1)
            target = ROOT / f".f8k_part{part}"
            (target / "images").mkdir(parents=True)
        shutil.copy(data / "images" / name, target / "images" / name)
        used += size
    for folder in sorted(ROOT.glob(".f8k_part*")):
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"{folder.name}: {len(list((folder / 'images').iterdir()))} images, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
