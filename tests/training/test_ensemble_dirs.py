"""`captioner ensemble`: writing an ensemble of runs, captioning with it, and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from captioner.api import Captioner
from captioner.cli import main
from captioner.errors import CheckpointError
from captioner.training import checkpoint
from captioner.training.ensemble import load_ensemble, make_ensemble


@pytest.fixture(scope="module")
def scene_images(tiny_scenes: Path) -> list[Path]:
    return sorted((tiny_scenes / "images" / "test").glob("*.png"))[:4]


@pytest.fixture(scope="module")
def twin_ensemble(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "twins"
    assert main(["ensemble", str(tiny_run), str(tiny_run), "--weights", "3,1", "--out", str(out)]) == 0
    return out


def test_an_ensemble_directory_holds_its_members_as_exports(twin_ensemble: Path):
    manifest = json.loads((twin_ensemble / checkpoint.ENSEMBLE_FILE).read_text())
    assert [m["path"] for m in manifest["members"]] == ["members/0", "members/1"]
    assert [m["weight"] for m in manifest["members"]] == [3.0, 1.0]
    for member in ("members/0", "members/1"):
        for name in ("model.safetensors", "config.json", "vocab.json"):
            assert (twin_ensemble / member / name).is_file()
    assert load_ensemble(twin_ensemble).weights == [0.75, 0.25]


def test_an_ensemble_of_one_run_twice_captions_as_that_run(twin_ensemble: Path, scene_images, capsys):
    # The member as exported (fp16 weights), alone: mixing it with itself changes nothing.
    alone = Captioner.from_pretrained(twin_ensemble / "members" / "0").caption(scene_images)
    assert main(["caption", *map(str, scene_images), "--checkpoint", str(twin_ensemble), "--json",
                 "--with-attention"]) == 0
    together = json.loads(capsys.readouterr().out)
    assert [r["caption"] for r in together] == [r.caption for r in alone]
    for mixed, single in zip(together, alone):
        np.testing.assert_allclose(np.array(mixed["attention"]), single.attention, atol=1e-5)
        assert mixed["score"] == pytest.approx(single.score, abs=1e-4)


def test_evaluate_takes_an_ensemble(twin_ensemble: Path, tiny_scenes: Path, tmp_path: Path, capsys):
    assert main(["evaluate", "--checkpoint", str(twin_ensemble), "--data", str(tiny_scenes), "--split", "test",
                 "--limit", "8", "--results", str(tmp_path / "results.json"), "--json", "--no-meteor",
                 "--quiet"]) == 0
    assert "CIDEr" in json.loads(capsys.readouterr().out)["metrics"]


def test_a_run_loader_points_at_the_members(twin_ensemble: Path):
    with pytest.raises(CheckpointError, match="is an ensemble of runs"):
        checkpoint.load_run(twin_ensemble)


def test_runs_with_other_vocabularies_are_refused(tiny_run: Path, tmp_path: Path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    vocabulary = json.loads((other / "vocab.json").read_text())
    vocabulary["tokens"] = vocabulary["tokens"][:-1] + ["zebra"]
    (other / "vocab.json").write_text(json.dumps(vocabulary))
    with pytest.raises(CheckpointError, match="another vocabulary"):
        make_ensemble([tiny_run, other], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_member_or_a_damaged_manifest_is_one_line(twin_ensemble: Path, tmp_path: Path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(twin_ensemble, broken)
    shutil.rmtree(broken / "members" / "1")
    assert main(["caption", "x.jpg", "--checkpoint", str(broken)]) == 2
    assert "members/1, which is missing" in capsys.readouterr().err
    (broken / checkpoint.ENSEMBLE_FILE).write_text('{"format": "captioner-ensemble-v1", "members": [{"path": 1}]}')
    with pytest.raises(CheckpointError, match="needs a 'path' and a numeric 'weight'"):
        load_ensemble(broken)


def test_weights_must_be_one_positive_number_per_run(tiny_run: Path, tmp_path: Path, capsys):
    assert main(["ensemble", str(tiny_run), str(tiny_run), "--weights", "1,0", "--out", str(tmp_path / "a")]) == 2
    assert "positive" in capsys.readouterr().err
    assert main(["ensemble", str(tiny_run), "--weights", "1,1", "--out", str(tmp_path / "b")]) == 2
    assert "one weight per member" in capsys.readouterr().err


def test_an_ensemble_is_not_written_over_another_folder(tiny_run: Path, tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not an ensemble directory"):
        make_ensemble([tiny_run], tmp_path)


def test_the_ensemble_sets_its_own_decoding_settings(tiny_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "tuned"
    assert main(["ensemble", str(tiny_run), str(tiny_run), "--out", str(out),
                 "--set", "eval.length_penalty=0.5", "--set", "eval.beam_size=2"]) == 0
    loaded = load_ensemble(out)
    assert (loaded.config.eval.length_penalty, loaded.config.eval.beam_size) == (0.5, 2)
    assert loaded.config.decoder == checkpoint.load_run(tiny_run).config.decoder
    assert main(["ensemble", str(tiny_run), "--out", str(tmp_path / "x"), "--set", "optim.epochs=3"]) == 2
    assert "eval.FIELD=VALUE only" in capsys.readouterr().err
    assert main(["ensemble", str(tiny_run), "--out", str(tmp_path / "y"), "--set", "eval.no_such=1"]) == 2
    assert "no_such" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()  # refused before anything was written


def test_a_member_of_an_ensemble_can_join_a_new_one_but_not_rewrite_its_own(twin_ensemble: Path, tmp_path: Path):
    member = twin_ensemble / "members" / "0"
    with pytest.raises(CheckpointError, match="inside"):
        make_ensemble([member, member], twin_ensemble)
    assert (member / "model.safetensors").is_file()
    assert make_ensemble([member, twin_ensemble / "members" / "1"], tmp_path / "again").weights == [0.5, 0.5]


def test_members_with_one_frozen_pretrained_encoder_share_one_copy(tmp_path: Path):
    from captioner.pretrained import PRETRAINED_DIR

    single = PRETRAINED_DIR / "flickr8k-lite0"
    loaded = make_ensemble([single, single], tmp_path / "lite0_twice")
    assert len(loaded.model.encoder.members) == 1
    assert loaded.model.decoder.members[0] is not loaded.model.decoder.members[1]
    photo = Path(__file__).resolve().parents[2] / "examples" / "photos" / "dog_german_shepherd.jpg"
    (alone,) = Captioner.from_pretrained(single).caption(photo, guidance=False)
    (together,) = Captioner.from_pretrained(tmp_path / "lite0_twice").caption(photo, guidance=False)
    assert together.caption == alone.caption
    # The second member is restored onto the first one's encoder rather than building another.
    from captioner.training.loop import restore_model

    run = checkpoint.load_run(single)
    first = restore_model(run)
    assert restore_model(run, encoder=first.encoder).encoder is first.encoder
