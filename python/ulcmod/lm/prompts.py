"""Prompts with function categories: the shipped offline corpus, local files, Infinity-Instruct.

The seven categories are the paper's: Coding, Math, Linguistic, Knowledge, Translation, Ethical,
Writing. The offline corpus ships inside the package (1,000 train + 200 test prompts per
category, real benchmark content; see ``corpus_attributions()`` and scripts/build_corpus.py).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources

from ..core._optional import require
from ..core._validation import check_random_state

CATEGORIES = ("Coding", "Math", "Linguistic", "Knowledge", "Translation", "Ethical", "Writing")


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text, category, split, source and licence."""

    text: str
    category: str
    split: str = ""  # "train", "test" or "" (not split yet)
    source: str = ""
    license: str = ""


def _data_file(name: str):
    return resources.files("ulcmod").joinpath("data", name)


def _jsonl_records(lines, path: str):
    """``(where, record)`` for every non-blank line of a JSON-lines file; `where` is "line N"."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); "
                                 f"every line of a .jsonl file must be one JSON object") from None


def _shipped_rows(name: str) -> list[dict]:
    """The rows of a gzip-compressed JSON-lines file shipped in ``ulcmod/data``."""
    with _data_file(name).open("rb") as f, gzip.open(f, "rt", encoding="utf-8") as lines:
        return [row for _, row in _jsonl_records(lines, name)]


def load_corpus(split: str | None = None, categories=None) -> list[Prompt]:
    """The offline corpus shipped with ulcmod.

    Parameters
    ----------
    split : {"train", "test"}, optional
        Only that split (default both).
    categories : list of str, optional
        Only these categories (default all seven).
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    wanted = set(CATEGORIES if categories is None else categories)
    unknown = wanted - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; the corpus has {list(CATEGORIES)}")
    return [Prompt(**r) for r in _shipped_rows("corpus.jsonl.gz")
            if r["category"] in wanted and (split is None or r["split"] == split)]


def corpus_attributions() -> str:
    """Sources, licences and per-category counts of the offline corpus (markdown)."""
    return _data_file("ATTRIBUTIONS.md").read_text(encoding="utf-8")


def load_mmlu(subjects=None, n: int | None = None, random_state=None) -> list[dict]:
    """MMLU test questions shipped with ulcmod (MIT): dicts with ``prompt``, ``options``, ``answer``.

    `n` draws that many questions at random (seeded) from the chosen subjects.
    """
    rows = _shipped_rows("mmlu.jsonl.gz")
    if subjects is not None:
        rows = [r for r in rows if r["subject"] in set(subjects)]
    if n is not None and n < len(rows):
        rows = [rows[i] for i in sorted(check_random_state(random_state).choice(len(rows), n, replace=False))]
    return [{"prompt": f"The following is a multiple choice question about {r['subject']}.\n\n"
                       f"{r['question']}\nAnswer:", "options": r["options"], "answer": r["answer"],
             "subject": r["subject"]} for r in rows]


def load_prompts(path, *, text_column: str = "text", label_column: str = "label",
                 split_column: str | None = None) -> list[Prompt]:
    """Prompts from a local JSON lines (.jsonl), JSON list (.json), CSV (.csv) or parquet file.

    Every row needs a text and a label (category) column; a split column is optional. Every row
    is checked: a row that is not an object, lacks a column or has no label raises
    ``ValueError`` naming the file and the row's line (JSON lines, CSV) or number; rows whose
    text is empty or null are skipped with one warning that counts them.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"dataset file {path!r} does not exist")
    columns = [c for c in (text_column, label_column, split_column) if c]
    prompts, empty = [], []
    for where, row in _file_records(path):
        text, label, split = _row_fields(row, path, where, columns, text_column, label_column, split_column)
        if text is None:
            empty.append(where)
        else:
            prompts.append(Prompt(text, label, split, source=os.path.basename(path)))
    if empty:
        warnings.warn(f"{path}: {len(empty)} row(s) with an empty or null {text_column!r} are skipped "
                      f"(first: {empty[0]})", UserWarning, stacklevel=2)
    if not prompts:
        raise ValueError(f"{path} holds no rows with a text" + (f" ({len(empty)} are empty)" if empty else ""))
    return prompts


def _file_records(path: str):
    """``(where, record)`` for every row of a dataset file, `where` saying where it is ("line 7")."""
    ext = os.path.splitext(path[:-3] if path.endswith(".gz") else path)[1].lower()
    opener = gzip.open if path.endswith(".gz") else open
    if ext == ".jsonl":
        with opener(path, "rt", encoding="utf-8") as f:
            yield from _jsonl_records(f, path)
    elif ext == ".json":
        with opener(path, "rt", encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(data, list):
            keys = f" with keys {sorted(data)[:5]}" if isinstance(data, dict) else ""
            raise ValueError(f"{path} holds a JSON {type(data).__name__}{keys}, not a list of rows; a .json dataset "
                             f"is a list of objects such as [{{\"text\": ..., \"label\": ...}}, ...]")
        yield from ((f"row {i + 1}", row) for i, row in enumerate(data))
    elif ext == ".csv":
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield f"line {reader.line_num}", row
    elif ext == ".parquet":
        pq = require("pyarrow.parquet", "reading parquet", "pip install pyarrow")
        yield from ((f"row {i + 1}", row) for i, row in enumerate(pq.read_table(path).to_pylist()))
    else:
        raise ValueError(f"unsupported file type {ext!r}; use .jsonl, .json, .csv or .parquet")


def _row_fields(row, path, where, columns, text_column, label_column, split_column):
    """``(text or None when empty, label, split)`` of one dataset row, checked."""
    if not isinstance(row, dict):
        raise ValueError(f"{path}, {where}: expected an object with {columns} fields, got "
                         f"{type(row).__name__} {str(row)[:40]!r}")
    missing = [c for c in columns if c not in row]
    if missing:
        raise ValueError(f"{path}, {where}: no column(s) {missing}; this row has {sorted(map(str, row))} "
                         f"(choose them with --text-column / --label-column)")
    text, label = row[text_column], row[label_column]
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{path}, {where}: {text_column!r} is {type(text).__name__} {text!r}, not a string")
    if _blank(label):
        raise ValueError(f"{path}, {where}: {label_column!r} is {label!r}; every prompt needs a category label")
    if not isinstance(label, (str, int)) or isinstance(label, bool):
        raise ValueError(f"{path}, {where}: {label_column!r} is {type(label).__name__} {label!r}; a category label "
                         f"is a string (or an integer)")
    split = "" if not split_column or row[split_column] is None else str(row[split_column])
    return (text if text and text.strip() else None), str(label).strip(), split


def _blank(value) -> bool:
    """Null, NaN or an empty string: no value."""
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


# Infinity-Instruct labels each sample with fine-grained English abilities ("ability_en"). Each
# label maps to the first category whose keywords it contains (so "programming knowledge" is
# Coding, not Knowledge); a sample is kept only when its labels map to exactly one category.
ABILITY_RULES = (
    ("Translation", ("translat",)),
    ("Coding", ("programming", "code", "coding", "software", "sql", "debug")),
    ("Math", ("mathemat", "calculat", "arithmetic", "algebra", "geometr", "equation", "probability")),
    ("Ethical", ("ethic", "moral")),
    ("Writing", ("writing", "creative", "storytelling", "poetry", "copywriting", "composition")),
    ("Linguistic", ("grammar", "linguistic", "syntax", "vocabulary", "spelling", "rhetoric", "idiom",
                    "part-of-speech", "semantic")),
    ("Knowledge", ("knowledge", "fact", "history", "geograph", "common sense", "science", "biology",
                   "chemistry", "physics")),
)


def category_of_abilities(abilities, rules=ABILITY_RULES) -> str | None:
    """The single category that a sample's ability labels map to, or None (no or several)."""
    found = set()
    for label in abilities or ():
        low = str(label).lower()
        for category, keywords in rules:
            if any(k in low for k in keywords):
                found.add(category)
                break
    return found.pop() if len(found) == 1 else None


def _first_human_turn(conversations) -> str | None:
    for turn in conversations or ():
        if turn.get("from") == "human" and turn.get("value", "").strip():
            return turn["value"]
    return None


def load_infinity_instruct(path: str = "BAAI/Infinity-Instruct", *, name: str | None = "0625",
                           split: str = "train", limit: int | None = None,
                           rules=ABILITY_RULES) -> list[Prompt]:
    """Infinity-Instruct samples with one of the seven categories, first human turn as the prompt.

    `path` is a hub id (needs network access) or a local ``.jsonl``/``.json``/``.parquet`` file or
    folder in the same format (``conversations`` with ``from``/``value`` turns, ``label`` with
    ``ability_en``). Samples whose abilities map to no category or to several are skipped.
    Reading stops after `limit` kept samples.
    """
    datasets = require("datasets", "loading Infinity-Instruct", "pip install datasets")
    if os.path.exists(path):
        files = path if os.path.isfile(path) else [os.path.join(path, f) for f in sorted(os.listdir(path))]
        first = files if isinstance(files, str) else files[0]
        builder = "parquet" if first.endswith(".parquet") else "json"
        ds = datasets.load_dataset(builder, data_files=files, split=split, streaming=True)
        source = os.path.basename(os.path.normpath(path))
    else:
        ds = datasets.load_dataset(path, name, split=split, streaming=True)
        source = f"{path}/{name}" if name else path
    out = []
    for rec in ds:
        category = category_of_abilities((rec.get("label") or {}).get("ability_en"), rules)
        text = _first_human_turn(rec.get("conversations"))
        if category and text:
            out.append(Prompt(text, category, source=source, license="CC-BY-SA-4.0 (Infinity-Instruct)"))
            if limit is not None and len(out) >= limit:
                break
    return out


def split_by_category(prompts, n_train: int, n_test: int, *, categories=None, random_state=None):
    """Stratified train/test split: `n_train` and `n_test` prompts of every category.

    Prompts are drawn at random (seeded) within each category; raises ``ValueError`` naming the
    category when one has fewer than ``n_train + n_test`` prompts.
    """
    rng = check_random_state(random_state)
    by_category = defaultdict(list)
    for p in prompts:
        by_category[p.category].append(p)
    cats = list(categories) if categories is not None else sorted(by_category)
    train, test = [], []
    for c in cats:
        pool = by_category.get(c, [])
        if len(pool) < n_train + n_test:
            raise ValueError(
                f"category {c!r} has {len(pool)} prompts, fewer than n_train + n_test = {n_train + n_test}; "
                f"lower the sample counts"
            )
        pick = rng.permutation(len(pool))[: n_train + n_test]
        train += [Prompt(pool[i].text, c, "train", pool[i].source, pool[i].license) for i in pick[:n_train]]
        test += [Prompt(pool[i].text, c, "test", pool[i].source, pool[i].license) for i in pick[n_train:]]
    return train, test

