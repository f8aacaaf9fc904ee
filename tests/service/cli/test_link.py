"""``sleuth kb build`` / ``link`` / ``train linker`` / ``eval link`` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main
from tests.linking.conftest import ALIASES, ENTITIES


def write_kb_files(directory: Path) -> tuple[Path, Path]:
    entities = directory / "entities.jsonl"
    entities.write_text(
        "".join(json.dumps({"id": e.entity_id, "name": e.name, "description": e.description}) + "\n" for e in ENTITIES),
        encoding="utf-8",
    )
    aliases = directory / "aliases.tsv"
    aliases.write_text("alias\tentity\trank\n" + "".join(f"{a.alias}\t{a.entity_id}\t{a.rank}\n" for a in ALIASES))
    return entities, aliases


def test_kb_build_writes_a_kb_with_manifest(tmp_path: Path, capsys) -> None:
    entities, aliases = write_kb_files(tmp_path)
    code = main(["kb", "build", "--entities", str(entities), "--aliases", str(aliases), "--out", str(tmp_path / "kb")])
    assert code == 0
    assert "13 entities" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["kind"] == "kb"
    assert set(manifest["files"]) == {"entities.jsonl", "aliases.tsv"}
    assert manifest["inputs"]["entities"][0]["sha256"]


def test_kb_build_stops_at_a_bad_row_without_writing(tmp_path: Path, capsys) -> None:
    entities, aliases = write_kb_files(tmp_path)
    with open(aliases, "a", encoding="utf-8") as handle:
        handle.write("Ghost\tNo Such Entity\t1\n")
    code = main(["kb", "build", "--entities", str(entities), "--aliases", str(aliases), "--out", str(tmp_path / "kb")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{aliases}:{len(ALIASES) + 2}:" in err and "unknown entity 'No Such Entity'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "kb").exists()


def test_eval_link_rejects_a_missing_kb(tmp_path: Path, capsys) -> None:
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"id": "1", "text": "Paris", "mentions": []}\n')
    code = main(["eval", "link", "--kb", str(tmp_path / "nope"), "--benchmark", str(bench)])
    assert code == 2
    assert "no such artifact directory" in capsys.readouterr().err


@pytest.mark.integration
def test_link_command_prints_entities_and_runner_ups(capsys) -> None:
    """With no --kb, ``sleuth link`` uses the demo KB and demo linker."""
    assert main(["link", "--json", "Michael Jordan starred in Creed."]) == 0
    rows = json.loads(capsys.readouterr().out)
    jordan = next(r for r in rows if r["surface"] == "Michael Jordan")
    assert jordan["entity"] == "Michael B. Jordan"
    assert len(jordan["candidates"]) >= 2


def test_eval_link_per_document_counts_feed_eval_compare(tmp_path: Path, capsys) -> None:
    demo = Path(__file__).resolve().parents[3] / "service" / "demo" / "kb"
    kb = tmp_path / "kb"
    build = ["kb", "build", "--entities", str(demo / "entities.jsonl"), "--aliases", str(demo / "aliases.tsv")]
    assert main([*build, "--out", str(kb)]) == 0
    bench = tmp_path / "bench.jsonl"
    docs = [
        {
            "id": "a",
            "text": "Michael Jordan starred in Creed.",
            "mentions": [
                {"start": 0, "end": 14, "surface": "Michael Jordan", "entity": "Michael B. Jordan"},
                {"start": 26, "end": 31, "surface": "Creed", "entity": "Creed (film)"},
            ],
        },
        {
            "id": "b",
            "text": "Scottie Pippen played beside Michael Jordan.",
            "mentions": [
                {"start": 0, "end": 14, "surface": "Scottie Pippen", "entity": "Scottie Pippen"},
                {"start": 29, "end": 43, "surface": "Michael Jordan", "entity": "Michael Jordan"},
            ],
        },
    ]
    bench.write_text("".join(json.dumps(d) + "\n" for d in docs))
    capsys.readouterr()
    per_doc = tmp_path / "per_doc.jsonl"
    argv = ["eval", "link", "--kb", str(kb), "--benchmark", str(bench), "--json", "--per-doc-out", str(per_doc)]
    assert main(argv) == 0
    totals = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in per_doc.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    for key in ("tp", "fp", "fn"):
        assert sum(r[key] for r in rows) == totals[key]
    assert sum(r["tp"] + r["fn"] for r in rows) == 4  # every gold mention is accounted for
    assert main(["eval", "compare", str(per_doc), str(per_doc), "--json"]) == 0
    f1 = json.loads(capsys.readouterr().out)["metrics"][0]
    assert (f1["metric"], f1["a"], f1["difference"], f1["p_value"]) == ("f1", totals["f1"], 0.0, 1.0)


def _write_benchmark(path: Path, docs: list[tuple[str, list[tuple[str, str | None]]]]) -> Path:
    """Documents with gold mentions given as (surface, entity); each surface's first occurrence is the span."""
    with open(path, "w", encoding="utf-8") as handle:
        for number, (text, golds) in enumerate(docs):
            mentions = []
            for surface, entity in golds:
                start = text.index(surface)
                mentions.append({"start": start, "end": start + len(surface), "surface": surface, "entity": entity})
            handle.write(json.dumps({"id": str(number), "text": text, "mentions": mentions}) + "\n")
    return path


SPORTS_AND_CITIES = [
    ("Michael Jordan won six NBA titles with the Bulls.", [("Michael Jordan", "Michael Jordan")]),
    ("Paris is the capital city of France.", [("Paris", "Paris")]),
    ("Saddam Hussein was president of Iraq.", [("Saddam Hussein", "Saddam Hussein")]),
    ("The UN met in Washington.", [("UN", "United Nations"), ("Washington", "Washington, D.C.")]),
]
PEOPLE = [
    ("Michael Jordan starred in the film Creed.", [("Michael Jordan", "Michael B. Jordan")]),
    ("Michael Jordan is a professor of machine learning.", [("Michael Jordan", "Michael I. Jordan")]),
    ("Paris Saint-Germain won the league final; Paris cheered.", [("Paris Saint-Germain", "Paris Saint-Germain")]),
    ("MaliVai Washington is a tennis player.", [("MaliVai Washington", "MaliVai Washington")]),
]


@pytest.mark.integration
def test_train_linker_reports_leave_one_dataset_out_transfer(tmp_path: Path, capsys) -> None:
    entities, aliases = write_kb_files(tmp_path)
    kb = tmp_path / "kb"
    assert main(["kb", "build", "--entities", str(entities), "--aliases", str(aliases), "--out", str(kb)]) == 0
    first = _write_benchmark(tmp_path / "sports.jsonl", SPORTS_AND_CITIES)
    second = _write_benchmark(tmp_path / "people.jsonl", PEOPLE)
    capsys.readouterr()
    out = tmp_path / "linker"
    args = ["train", "linker", "--kb", str(kb), "--benchmark", str(first), "--benchmark", str(second)]
    assert main([*args, "--folds", "2", "--model-type", "logistic", "--transfer", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "leave-one-dataset-out F1" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    metrics = manifest["metrics"]
    # trained at the default runtime (int8), recorded: eval link and serve encode on it, and tell a mismatch
    assert manifest["inputs"]["encoder_runtime"] == "onnx-int8"
    assert set(metrics["transfer_f1_by_dataset"]) == {"sports", "people"}
    assert all(0.0 <= f1 <= 1.0 for f1 in metrics["transfer_f1_by_dataset"].values())
    # The training-set prior (rank 1) is right on every sports mention: a model trained on people alone
    # must still link most of them, or transfer is broken.
    assert metrics["transfer_f1_by_dataset"]["sports"] >= 0.6
    assert 0.0 <= metrics["cv_f1"] <= 1.0
    # the detector's mentions of the same documents are scored end to end, and choose a NIL rule of their
    # own, which the model uses only when asked to
    assert "detected mentions: CV e2e F1" in printed and "leave-one-dataset-out e2e F1" in printed
    assert 0.0 <= metrics["cv_detected_nil_threshold"] <= 0.9
    assert 0.0 <= metrics["cv_e2e_f1_gold_rule"] <= metrics["cv_e2e_f1_detected_rule"] <= 1.0
    assert set(metrics["transfer_e2e_f1_by_dataset"]) == {"sports", "people"}
    assert "nil_threshold_detected" not in json.loads((out / "model.json").read_text())
    detected = tmp_path / "detected"
    assert main([*args, "--folds", "2", "--model-type", "logistic", "--detected-nil-rule", "--out", str(detected)]) == 0
    model = json.loads((detected / "model.json").read_text())
    assert model["nil_threshold_detected"] == metrics["cv_detected_nil_threshold"]
    # eval link on a training input warns (stderr and --json); on a file the model never saw it does not
    capsys.readouterr()
    assert main(["eval", "link", "--kb", str(kb), "--model", str(out), "--benchmark", str(first), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["trained_on_benchmark"] is True and "training input" in captured.err
    # the rank-1 reference: in the test KB every sports mention's rank-1 alias entry is its gold entity
    assert report["rank1"]["f1"] == 1.0
    unseen = _write_benchmark(tmp_path / "unseen.jsonl", SPORTS_AND_CITIES[:2])
    assert main(["eval", "link", "--kb", str(kb), "--model", str(out), "--benchmark", str(unseen), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["trained_on_benchmark"] is False and "training input" not in captured.err
    assert "trained on onnx-int8 vectors" not in captured.err
    argv = ["eval", "link", "--kb", str(kb), "--model", str(out), "--benchmark", str(unseen)]
    argv += ["--encoder-runtime", "torch"]
    assert main(argv) == 0
    assert "trained on onnx-int8 vectors, scored here on torch" in capsys.readouterr().err


def test_train_linker_transfer_needs_two_benchmarks(tmp_path: Path, capsys) -> None:
    bench = _write_benchmark(tmp_path / "only.jsonl", SPORTS_AND_CITIES)
    code = main(["train", "linker", "--kb", str(tmp_path / "kb"), "--benchmark", str(bench), "--transfer"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--transfer" in err and "Traceback" not in err
