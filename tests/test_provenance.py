"""Provenance sidecars: content, input hashes, atomic JSON."""

import hashlib
import json

from moelab.provenance import Provenance, sha256_path, write_json


def test_sidecar_records_config_inputs_seed_and_versions(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("hello")
    out = tmp_path / "table.csv"
    out.write_text("a,b\n")
    prov = Provenance(config={"k": 1}, inputs=[inp], seed=7)
    meta_path = prov.write(out, extra={"steps": 3})
    assert meta_path.name == "table.csv.meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["config"] == {"k": 1} and meta["seed"] == 7 and meta["extra"] == {"steps": 3}
    assert meta["inputs"][str(inp)] == hashlib.sha256(b"hello").hexdigest()
    assert meta["versions"]["torch"] != "absent" and meta["wall_time_s"] >= 0
    assert "git_commit" in meta


def test_folder_hash_changes_with_content_and_sidecar_inside(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "w.bin").write_bytes(b"\x00\x01")
    h1 = sha256_path(d)
    (d / "w.bin").write_bytes(b"\x00\x02")
    assert sha256_path(d) != h1
    assert Provenance(config={}).write(d) == d / "meta.json"


def test_write_json_leaves_no_temp_file(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
