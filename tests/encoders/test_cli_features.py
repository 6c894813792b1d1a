"""``captioner features`` end to end on a tiny folder dataset."""

from __future__ import annotations

import shutil

from captioner.cli import main
from captioner.encoders.cache import FeatureCache


def _folder_dataset(tmp_path, photo_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, path in photo_paths.items():
        shutil.copy(path, folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "captions.csv").write_text(
        "image,caption,split\n"
        "chelsea.jpg,a cat,train\nbroken.jpg,nothing,train\ncoffee.jpg,a cup of coffee,val\n"
    )
    return folder


def test_features_command_builds_a_cache(tmp_path, photo_paths, capsys):
    folder = _folder_dataset(tmp_path, photo_paths)
    out = tmp_path / "cache"
    argv = [
        "features",
        "--data",
        str(folder),
        "--split",
        "train,val",
        "--image-size",
        "96",
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "3 images, shape (3, 9, 1280)" in captured.out
    assert "broken.jpg" in captured.err
    cache = FeatureCache.open(out)
    assert len(cache) == 3 and cache.config.name == "efficientnet_lite0"
    assert main(argv) == 0
    assert "reused feature cache" in capsys.readouterr().out


def test_features_command_reports_missing_weights_in_one_line(tmp_path, photo_paths, capsys):
    folder = _folder_dataset(tmp_path, photo_paths)
    status = main(
        ["features", "--data", str(folder), "--encoder", "resnet50", "--out", str(tmp_path / "c")]
    )
    error = capsys.readouterr().err.strip()
    assert status == 2 and error.count("\n") == 0 and "--encoder-weights PATH" in error
