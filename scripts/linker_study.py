"""Model selection for the entity linker on prepared features: seeds, feature drops, the dev set.

Preparing candidates and features is the slow part of ``sleuth train linker`` (about 15 minutes for
the four training sets on two cores); fitting is minutes. This script prepares once and then
compares variants under the selection criterion of docs/models/linker.md (primary: aida_testa ED
F1, mean over seeds; secondary: leave-one-dataset-out ED F1 over the training sets):

    python -m scripts.linker_study prepare --kb KB --out var/study
    python -m scripts.linker_study run --study var/study --seeds 13 7 29
    python -m scripts.linker_study run --study var/study --seeds 13 7 29 --drop acronym_match --lodo
    python -m scripts.linker_study run --study var/study --seeds 13 7 29 --no-prior --document-folds
    python -m scripts.linker_study prior-candidates --study var/study --out var/study-pc
    python -m scripts.linker_study run --study var/study-pc --seeds 13 7 29

``prior-candidates`` adds the candidates the training annotations propose (as ``train linker``
does by default: out of fold for training documents, every training count for the dev set),
preparing again only the documents that gain one; ``prepare`` itself prepares without them.

The mention prior's columns (``linking.features.PRIOR_FEATURE_NAMES``) are not prepared: training
fills them out of fold from the gold counts (``linking.training.FoldPriors``) and the dev set from
the counts of all training documents, as ``train linker`` does; ``--no-prior`` leaves them at zero
(the model before the prior), ``--drop`` zeroes any columns in training (``DisambiguatorConfig.drop``).

``prepare`` reads only training sets and the dev set (aida_testa); report sets are never touched.
Each ``run`` appends one JSON line per seed to ``STUDY/runs.jsonl`` (variant, seed, CV F1 and NIL
rule, dev ED F1 and, with ``--lodo``, LODO F1 by dataset).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "linking"
TRAINING = {
    "aquaint": DATA / "benchmarks" / "aquaint.jsonl",
    "oke2015": DATA / "benchmarks" / "oke2015.jsonl",
    "oke2016": DATA / "benchmarks" / "oke2016.jsonl",
    "aida_train": DATA / "aida" / "benchmarks" / "aida_train.jsonl",
}
DEV = {"aida_testa": DATA / "aida" / "benchmarks" / "aida_testa.jsonl"}


def _linker(kb_dir: Path, runtime: str):
    """The linker studies prepare with: exact entity search, as training (aida_testa too, so a study's
    dev scores compare models, not searches)."""
    from linking import EntityLinker, KnowledgeBase, LinkerConfig, MentionDetector, load_spacy
    from linking.entity_index import EXACT
    from retrieval.onnx_encoder import load_encoder

    kb = KnowledgeBase.load(kb_dir)
    config = LinkerConfig(entity_search=EXACT)
    return EntityLinker.build(kb, load_encoder(runtime=runtime), detector=MentionDetector(load_spacy()), config=config)


def prepare(args: argparse.Namespace) -> None:
    from linking import read_benchmark
    from linking.augmentation import shorten_person_mentions
    from linking.features import FEATURE_NAMES
    from linking.training import prepare_documents

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    linker = _linker(Path(args.kb), args.runtime)
    train, dev = [], []
    for name, path in TRAINING.items():
        started = time.perf_counter()
        documents = read_benchmark(path)
        train += prepare_documents(linker, documents, name)
        train += prepare_documents(linker, shorten_person_mentions(documents, linker.kb), name)
        print(f"{name}: {len(documents)} documents in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    for name, path in DEV.items():
        dev += prepare_documents(linker, read_benchmark(path), name)
    with open(out / "prepared.pkl", "wb") as handle:
        pickle.dump(
            {"kb": str(args.kb), "runtime": args.runtime, "feature_names": FEATURE_NAMES, "train": train, "dev": dev},
            handle,
        )
    print(f"prepared {len(train)} training and {len(dev)} dev documents -> {out / 'prepared.pkl'}")


def prior_candidates(args: argparse.Namespace) -> None:
    from linking.features import FEATURE_NAMES
    from linking.training import FoldPriors, _folds, with_prior_candidates

    study, out = Path(args.study), Path(args.out)
    with open(study / "prepared.pkl", "rb") as handle:
        data = pickle.load(handle)
    if data.get("prior_candidates"):
        raise SystemExit(f"{study}: prepared with prior candidates already")
    names = data.get("feature_names")
    train, dev = _upgrade(data["train"], names), _upgrade(data["dev"], names)
    linker = _linker(Path(data["kb"]), data["runtime"])
    started = time.perf_counter()
    priors = FoldPriors(train, _folds(train, 5))
    train = with_prior_candidates(linker, train, priors)
    dev = with_prior_candidates(linker, dev, priors.total)
    print(f"prior candidates added in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "prepared.pkl", "wb") as handle:
        pickle.dump(
            {**data, "feature_names": FEATURE_NAMES, "train": train, "dev": dev, "prior_candidates": True}, handle
        )
    print(f"-> {out / 'prepared.pkl'}")


def _upgrade(documents, names: tuple[str, ...]):
    """``documents`` prepared with the feature columns ``names``, in today's column layout (columns
    added since, such as the prior's, at zero; training fills those)."""
    from linking.features import FEATURE_NAMES

    if tuple(names) == FEATURE_NAMES:
        return documents
    missing = [name for name in FEATURE_NAMES if name not in names and not name.startswith("prior_")]
    if missing:
        raise SystemExit(f"prepared without the columns {', '.join(missing)}: prepare again")
    where = [(FEATURE_NAMES.index(name), j) for j, name in enumerate(names) if name in FEATURE_NAMES]
    out = []
    for doc in documents:
        features = np.zeros((len(doc.prepared.features), len(FEATURE_NAMES)), dtype=np.float32)
        for new, old in where:
            features[:, new] = doc.prepared.features[:, old]
        out.append(replace(doc, prepared=replace(doc.prepared, features=features)))
    return out


def _group_by_document(documents):
    """``documents`` with cross-validation folds by document (and its short-name copies) instead of
    ``train linker``'s folds by dateline day: the grouping used before, for comparison."""
    return [replace(doc, cv_group=f"{doc.dataset}/{doc.document.doc_id.split('#', 1)[0]}") for doc in documents]


def run(args: argparse.Namespace) -> None:
    from linking.disambiguation import DisambiguatorConfig
    from linking.features import FEATURE_NAMES
    from linking.training import (
        _model_scores,
        _rule,
        cross_validate,
        evaluate_prepared,
        leave_one_dataset_out,
        train_disambiguator,
    )

    study = Path(args.study)
    with open(study / "prepared.pkl", "rb") as handle:
        data = pickle.load(handle)
    unknown = [name for name in args.drop if name not in FEATURE_NAMES]
    if unknown:
        raise SystemExit(f"--drop: unknown feature(s) {', '.join(unknown)}")
    names = data.get("feature_names", FEATURE_NAMES)
    train, dev = _upgrade(data["train"], names), _upgrade(data["dev"], names)
    del data["train"], data["dev"]
    if args.document_folds:
        train = _group_by_document(train)
    linker = _linker(Path(data["kb"]), data["runtime"])
    default_name = "no-prior" if args.no_prior else "prior"
    if data.get("prior_candidates"):
        default_name += "+candidates"
    if args.drop:
        default_name += "+drop:" + ",".join(args.drop)
    if args.document_folds:
        default_name += "+document-folds"
    for seed in args.seeds:
        started = time.perf_counter()
        config = DisambiguatorConfig(
            seed=seed,
            mention_prior=not args.no_prior,
            prior_candidates=bool(data.get("prior_candidates")),
            drop=tuple(args.drop),
        )
        cv = cross_validate(linker, train, config)
        model = train_disambiguator(train, config, first_pass_scores=cv.first_pass_scores)
        options = _rule(cv.threshold, cv.margin, True)
        results = evaluate_prepared(linker, dev, [_model_scores(model, d) for d in dev], options)
        row = {
            "variant": args.name or default_name,
            "seed": seed,
            "cv_f1": cv.f1_overall,
            "cv_f1_by_dataset": cv.f1_by_dataset,
            "nil_rule": [cv.threshold, cv.margin],
            "dev_ed": {k: round(v.counts.f1, 4) for k, v in results.items() if k != "all"},
            "dev_ed_prf": {
                k: [round(v.counts.precision, 4), round(v.counts.recall, 4)] for k, v in results.items() if k != "all"
            },
        }
        if args.lodo:
            transfer = leave_one_dataset_out(linker, train, config)
            row["lodo_f1"] = transfer.f1_overall
            row["lodo_f1_by_dataset"] = transfer.f1_by_dataset
        row["seconds"] = round(time.perf_counter() - started)
        print(json.dumps(row), flush=True)
        with open(study / "runs.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in (study / "runs.jsonl").read_text().splitlines()]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        values = [r["dev_ed"]["aida_testa"] for r in mine]
        print(f"{variant}: aida_testa ED mean {np.mean(values):.4f} (min {min(values):.4f}, max {max(values):.4f}, "
              f"{len(values)} seeds)")  # fmt: skip
        lodo = [r["lodo_f1"] for r in mine if "lodo_f1" in r]
        if lodo:
            print(f"{variant}: LODO ED mean {np.mean(lodo):.4f} (min {min(lodo):.4f}, max {max(lodo):.4f}, "
                  f"{len(lodo)} seeds)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="prepare the training sets and the dev set once")
    p.add_argument("--kb", required=True, help="KB directory (shared + aida additions)")
    p.add_argument("--out", required=True, help="study directory to write")
    p.add_argument("--runtime", default="onnx-int8", help="encoder runtime (default onnx-int8, as train linker)")
    r = sub.add_parser("run", help="cross-validate, fit and score the dev set, per seed")
    r.add_argument("--study", required=True, help="a directory written by prepare")
    r.add_argument("--seeds", type=int, nargs="+", default=[13, 7, 29], help="LightGBM seeds (default 13 7 29)")
    r.add_argument("--drop", nargs="*", default=[], help="feature columns held at zero in training")
    r.add_argument("--no-prior", action="store_true", help="train without the mention prior's columns")
    r.add_argument(
        "--document-folds",
        action="store_true",
        help="cross-validation folds by document instead of by dateline day (the grouping before)",
    )
    r.add_argument("--name", default="", help="variant name in runs.jsonl (default from --drop)")
    r.add_argument("--lodo", action="store_true", help="also leave-one-dataset-out F1 (four more CVs per seed)")
    c = sub.add_parser("prior-candidates", help="a study with the candidates the training annotations propose")
    c.add_argument("--study", required=True, help="a directory written by prepare")
    c.add_argument("--out", required=True, help="study directory to write")
    args = parser.parse_args(argv)
    {"prepare": prepare, "run": run, "prior-candidates": prior_candidates}[args.command](args)


if __name__ == "__main__":
    main()
