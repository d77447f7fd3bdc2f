"""Negative tests of the dataset readers (issue 15): every row is checked, and named by its line.

Before, only the first row's columns were checked: a later row missing a column gave a
KeyError, a null text became the prompt "None", a missing label the category "None", and a bad
JSON line was reported as line 1 by the JSON parser.
"""

import csv
import json

import pytest

import ulcmod

ROW = {"text": "a prompt", "label": "Math"}


def jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_a_later_row_missing_a_column_is_named_by_its_line(tmp_path):
    path = jsonl(tmp_path, [ROW] * 5 + [{"text": "no label here"}])
    with pytest.raises(ValueError, match=r"d.jsonl, line 6: no column\(s\) \['label'\]; this row has \['text'\]"):
        ulcmod.load_prompts(path)


def test_a_bad_json_line_is_reported_with_its_real_line_number(tmp_path):
    path = jsonl(tmp_path, [ROW] * 25 + ['{"text": "cut', ROW])
    with pytest.raises(ValueError, match=r"d.jsonl, line 26: not valid JSON"):
        ulcmod.load_prompts(path)


def test_a_jsonl_of_scalars(tmp_path):
    # Before: TypeError ("argument of type 'int' is not iterable").
    with pytest.raises(ValueError, match=r"d.jsonl, line 1: expected an object with .* fields, got int"):
        ulcmod.load_prompts(jsonl(tmp_path, ["3", "4"]))


def test_a_json_dict_is_not_a_list_of_rows(tmp_path):
    # Before: KeyError: 0.
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"text": ["a", "b"], "label": ["x", "y"]}))
    with pytest.raises(ValueError, match=r"d.json holds a JSON dict with keys \['label', 'text'\], not a list of rows"):
        ulcmod.load_prompts(path)


def test_null_and_empty_texts_are_skipped_with_one_warning(tmp_path):
    # Before: a null text became the prompt "None" and an empty text an all-zero sample.
    path = jsonl(tmp_path, [ROW, {"text": None, "label": "Math"}, {"text": "  ", "label": "Math"}, ROW])
    with pytest.warns(UserWarning, match=r"2 row\(s\) with an empty or null 'text' are skipped \(first: line 2\)"):
        prompts = ulcmod.load_prompts(path)
    assert [p.text for p in prompts] == ["a prompt", "a prompt"]
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"holds no rows with a text \(1 are empty\)"):
        ulcmod.load_prompts(jsonl(tmp_path, [{"text": "", "label": "Math"}], "e.jsonl"))


@pytest.mark.parametrize("label", [None, "", float("nan")])
def test_a_missing_label_is_an_error_not_the_category_none(tmp_path, label):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([ROW, {"text": "x", "label": label}]))
    with pytest.raises(ValueError, match=r"d.json, row 2: 'label' is .*; every prompt needs a category label"):
        ulcmod.load_prompts(path)


def test_a_text_that_is_not_a_string(tmp_path):
    with pytest.raises(ValueError, match=r"line 2: 'text' is list \['a'\], not a string"):
        ulcmod.load_prompts(jsonl(tmp_path, [ROW, {"text": ["a"], "label": "Math"}]))


def test_csv_rows_are_checked_with_their_line(tmp_path):
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["text", "label"], ["a prompt", "Math"], ["short row"]])
    with pytest.raises(ValueError, match=r"d.csv, line 3: 'label' is None"):
        ulcmod.load_prompts(path)


def test_integer_labels_become_category_names(tmp_path):
    prompts = ulcmod.load_prompts(jsonl(tmp_path, [{"text": "a", "label": 3}, {"text": "b", "label": "x"}]))
    assert [p.category for p in prompts] == ["3", "x"]
