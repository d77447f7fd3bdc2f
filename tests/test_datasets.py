import csv
import json
import re

import pytest

import ulcmod
from ulcmod.lm import prompts as ds


def test_corpus_loads_offline_with_seven_categories_and_licences():
    corpus = ulcmod.load_corpus()
    assert {p.category for p in corpus} == set(ulcmod.CATEGORIES)
    for c in ulcmod.CATEGORIES:
        assert sum(p.category == c and p.split == "train" for p in corpus) == 1000
        assert sum(p.category == c and p.split == "test" for p in corpus) == 200
    norm = [re.sub(r"\s+", " ", p.text.lower()).strip() for p in corpus]
    assert len(set(norm)) == len(norm), "duplicates in the corpus"
    for p in corpus:
        assert p.text.strip() and p.source and p.license
        assert not re.search(r"\bNC\b|NON-?COMMERCIAL", p.license.upper())  # no non-commercial licence
    assert len(ulcmod.load_corpus(split="test", categories=["Math"])) == 200
    assert "| Math | 1000 | 200 |" in ds.corpus_attributions()
    with pytest.raises(ValueError, match="unknown categories"):
        ulcmod.load_corpus(categories=["Poetry"])


def test_load_prompts_from_jsonl_json_csv(tmp_path):
    rows = [{"prompt": "a b", "cat": "Math", "part": "train"}, {"prompt": "c", "cat": "Coding", "part": "test"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "cat", "part"])
        w.writeheader()
        w.writerows(rows)
    for name in ("d.jsonl", "d.json", "d.csv"):
        got = ulcmod.load_prompts(tmp_path / name, text_column="prompt", label_column="cat", split_column="part")
        assert [(p.text, p.category, p.split) for p in got] == [("a b", "Math", "train"), ("c", "Coding", "test")]
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\]"):
        ulcmod.load_prompts(tmp_path / "d.jsonl", label_column="cat")
    with pytest.raises(ValueError, match="does not exist"):
        ulcmod.load_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        ulcmod.load_prompts(tmp_path / "d.txt")


@pytest.mark.parametrize("abilities, category", [
    (["programming ability", "code writing"], "Coding"),
    (["mathematical calculation"], "Math"),
    (["translation"], "Translation"),
    (["linguistic knowledge"], "Linguistic"),  # first matching rule wins within a label
    (["programming ability", "knowledge question and answer"], None),  # two categories
    (["emotional support"], None),
    ([], None),
])
def test_ability_mapping(abilities, category):
    assert ds.category_of_abilities(abilities) == category


def test_infinity_instruct_loader_on_a_local_file(tmp_path):
    pytest.importorskip("datasets")

    def rec(i, abilities, turns):
        return {"id": str(i), "conversations": turns, "label": {"ability_en": abilities, "ability_zh": [],
                "cate_ability_en": [], "cate_ability_zh": []}, "langdetect": "en", "source": "x"}

    human = lambda t: {"from": "human", "value": t}  # noqa: E731
    gpt = lambda t: {"from": "gpt", "value": t}  # noqa: E731
    rows = [
        rec(0, ["code generation"], [{"from": "system", "value": "sys"}, human("write a sort"), gpt("ok")]),
        rec(1, ["programming", "history knowledge"], [human("mixed")]),
        rec(2, ["translation"], [human("translate hi"), gpt("salut"), human("again")]),
        rec(3, ["emotional support"], [human("hug")]),
        rec(4, ["mathematical reasoning"], [human("2+2?")]),
    ]
    path = tmp_path / "ii.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    got = ulcmod.load_infinity_instruct(str(path))
    assert [(p.text, p.category) for p in got] == [("write a sort", "Coding"), ("translate hi", "Translation"),
                                                    ("2+2?", "Math")]
    assert len(ulcmod.load_infinity_instruct(str(path), limit=2)) == 2


def test_split_by_category_is_stratified_and_checks_counts():
    corpus = ulcmod.load_corpus(split="train")
    train, test = ulcmod.split_by_category(corpus, 30, 10, random_state=0)
    for c in ulcmod.CATEGORIES:
        assert sum(p.category == c for p in train) == 30 and sum(p.category == c for p in test) == 10
    assert not {p.text for p in train} & {p.text for p in test}
    again, _ = ulcmod.split_by_category(corpus, 30, 10, random_state=0)
    assert [p.text for p in again] == [p.text for p in train]
    with pytest.raises(ValueError, match="category 'Coding' has 1000 prompts, fewer than n_train"):
        ulcmod.split_by_category(corpus, 900, 200)


def test_mmlu_questions_have_answers():
    qs = ulcmod.load_mmlu()
    assert len(qs) == 14042
    assert all(len(q["options"]) == 4 and q["answer"] in range(4) and q["prompt"].endswith("Answer:") for q in qs)
    some = ulcmod.load_mmlu(subjects=["astronomy"], n=5, random_state=0)
    assert len(some) == 5 and {q["subject"] for q in some} == {"astronomy"}
    assert some == ulcmod.load_mmlu(subjects=["astronomy"], n=5, random_state=0)
