"""The dataset commands as a user types them: `affect datasets ls`, `affect sample`,
`affect ingest`, and the clips file that `affect extract --dataset` builds from a data root.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from extract.clips import read_clips_file
from extract.encoders import encoder_options, list_encoders
from features_store import open_store, verify
from pipelines.cli import cli, main
from pipelines.cli.datasets import clips_for_extraction, write_clips_file
from pipelines.datasets import get_adapter, list_adapters

LAYOUTS = ["react", "raer", "affwild2", "cremad", "meld", "iemocap", "mosei"]


def test_datasets_ls_lists_every_layout_with_its_recipe():
    result = CliRunner().invoke(cli, ["datasets", "ls", "--json"])
    assert result.exit_code == 0, result.output
    described = {d["name"]: d for d in json.loads(result.stdout)}
    assert sorted(described) == sorted(LAYOUTS) == sorted(list_adapters())
    encoders = {d["name"]: d["recipe"]["encoders"] for d in described.values()}
    assert encoders["react"] == ["swin-t", "vggish-react", "wav2vec2-base"]
    assert encoders["affwild2"] == ["hsemotion-enet-b0", "vggish", "wav2vec2-base"]
    assert encoders["raer"] == ["clip-vit-b16@rapt@face", "clip-vit-b16@rapt@body"]
    assert described["raer"]["recipe"]["segments"] == 16
    assert encoders["cremad"] == ["dasheng-base", "hsemotion-enet-b0", "embeddinggemma"]
    for name in ("meld", "iemocap", "mosei"):
        assert encoders[name] == ["wav2vec2-base", "clip-vit-b16", "embeddinggemma"]
    assert all(d["reads"] and d["recipe"]["default_head"] for d in described.values())
    text = CliRunner().invoke(cli, ["datasets", "ls"])
    assert text.exit_code == 0 and "react: REACT" in text.output and "reads" in text.output


def test_recipes_name_registered_encoders_and_accepted_options():
    """`affect extract --dataset` hands the recipe to the encoder registry as is."""
    registered = {spec.name for spec in list_encoders()}
    for name in LAYOUTS:
        recipe = get_adapter(name).recipe
        for request in recipe.encoders:
            assert request.split("@")[0] in registered, (name, request)
        for encoder, options in recipe.encoder_options.items():
            assert set(options) <= set(encoder_options(encoder)), (name, encoder)


def test_sample_then_ingest_from_the_command_line(tmp_path):
    runner = CliRunner()
    data = tmp_path / "crema"
    result = runner.invoke(cli, ["sample", "--layout", "cremad", "--out", str(data),
                                 "--clips", "10", "--seconds", "0.5", "--seed", "7",
                                 "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "10 clips" in result.output and "planted signal" in result.output
    assert len(list((data / "AudioWAV").iterdir())) == 10
    store_path = tmp_path / "crema.zarr"
    result = runner.invoke(cli, ["ingest", "--dataset", "cremad", "--data-root", str(data),
                                 "--store", str(store_path)])
    assert result.exit_code == 0, result.output
    assert "cremad: 10 clips" in result.output and "cremad-va" in result.output
    store = open_store(str(store_path), mode="r")
    assert len(store.clip_ids()) == 10 and verify(store).ok


def test_user_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "--dataset", "react", "--data-root", str(tmp_path / "nowhere"),
              "--store", str(tmp_path / "s.zarr")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere" in err and "\n" not in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--layout", "raer", "--out", str(tmp_path / "full")])
    assert exit_info.value.code == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_clips_file_for_extraction_is_what_the_runner_reads(tmp_path):
    from pipelines.samples import generate_sample

    root = tmp_path / "RAER"
    generate_sample("raer", root, clips=5, seconds=1, seed=0, size=32)
    problems: list = []
    clips = clips_for_extraction("raer", root, problems)
    assert problems == [] and len(clips) == 5
    path = tmp_path / "clips.jsonl"
    assert write_clips_file(clips, path) == 5
    parsed = read_clips_file(str(path))
    assert [c["clip_id"] for c in parsed] == [c["clip_id"] for c in clips]
    assert all(c["frames"] and c["boxes"]["face"] and len(c["boxes"]["body"]) == 4
               for c in parsed)
