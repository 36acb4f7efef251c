"""What affect ships, as a user asks for it: `affect heads ls` and `affect encoders fetch`."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from functools import partial

import pytest
from click.testing import CliRunner

from extract.encoders.fetch import _download
from extract.encoders.specs import Download
from features_store.errors import UserError
from pipelines.cli import cli, main

SHIPPED_HEADS = {"regnn", "transformer", "transformer-lstm", "transformer-attention",
                 "fclstm-xl", "temporal_attention", "tpn_awm", "trm"}


def test_heads_ls_names_dataset_inputs_metric_and_paper_of_every_head():
    result = CliRunner().invoke(cli, ["heads", "ls", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert SHIPPED_HEADS <= set(rows)
    for name in SHIPPED_HEADS:
        row = rows[name]
        assert row["dataset"] and row["metric"] and row["paper"], row
        assert row["inputs"], row
    assert rows["regnn"]["dataset"] == "react" and rows["regnn"]["metric"] == "FRC"
    assert "swin-t" in rows["regnn"]["inputs"] and "react-emotion" in rows["regnn"]["inputs"]
    assert rows["trm"]["dataset"] == "cremad" and "Affective-TRM" in rows["trm"]["paper"]
    table = CliRunner().invoke(cli, ["heads", "ls"]).output.splitlines()
    assert table[0].split() == ["name", "dataset", "inputs", "metric", "paper"]
    assert any(line.startswith("tpn_awm ") and "w-F1" in line for line in table), table


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    for name in ("TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_encoders_fetch_offline_says_what_it_would_fetch_and_where_then_exits_2(
        empty_caches, capsys):
    with pytest.raises(SystemExit) as ended:
        main(["encoders", "fetch", "vggish"])
    assert ended.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    checkpoints = empty_caches / "torch_home" / "hub" / "checkpoints"
    assert line.startswith("error: encoder vggish: offline (HF_HUB_OFFLINE=1), nothing "
                           "downloaded; would fetch vggish-10086976.pth from https://"), line
    assert f"into {checkpoints}" in line and "vggish_pca_params-970ea276.pth" in line
    assert not checkpoints.exists()  # nothing was written
    with pytest.raises(SystemExit):
        main(["encoders", "fetch", "clip-vit-b16"])
    line = capsys.readouterr().err
    assert "https://huggingface.co/timm/vit_base_patch16_clip_224.openai" in line
    assert str(empty_caches / "hf_home" / "hub") in line


def test_encoders_fetch_skips_what_is_already_here(empty_caches):
    result = CliRunner().invoke(cli, ["encoders", "fetch", "minilm-l6"])
    assert result.exit_code == 0, result.output
    assert "ship with the installed packages; nothing to fetch" in result.output
    checkpoints = empty_caches / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "dasheng_base.pt").write_bytes(b"weights")
    result = CliRunner().invoke(cli, ["encoders", "fetch", "dasheng-base"])
    assert result.exit_code == 0 and "already here; nothing to fetch" in result.output
    unknown = CliRunner().invoke(cli, ["encoders", "fetch", "clip-vit-b99"],
                                 standalone_mode=False)
    assert isinstance(unknown.exception, UserError)
    assert "unknown encoder 'clip-vit-b99'" in str(unknown.exception)


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_fetched_file_lands_in_the_loaders_folder_and_its_name_hash_is_checked(
        file_server, tmp_path):
    served, base = file_server
    payload = b"published weights"
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    (served / f"net-{prefix}.pth").write_bytes(payload)
    (served / "net-00000000.pth").write_bytes(payload)  # a name whose hash does not match
    cache = tmp_path / "cache"
    got = _download(Download(f"net-{prefix}.pth", lambda: cache,
                             url=f"{base}/net-{prefix}.pth"))
    assert got == cache / f"net-{prefix}.pth" and got.read_bytes() == payload
    with pytest.raises(RuntimeError, match="invalid hash value"):
        _download(Download("net-00000000.pth", lambda: cache, url=f"{base}/net-00000000.pth"))
    assert not (cache / "net-00000000.pth").exists()
