"""Same data, same seed, same code: the same linker model, whether the entity vectors are cached or not.

Trained on the demo KB's documents (service/demo/kb) with a fake encoder whose vectors carry a
trace of how they were batched, as torch's do: a cache entry computed another way than this code
computes it would give another model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from linking import (
    DisambiguatorConfig,
    EntityIndex,
    EntityLinker,
    KnowledgeBase,
    cross_validate,
    prepare_documents,
    read_benchmark,
    shorten_person_mentions,
    train_disambiguator,
)
from linking.entity_index import entity_text
from retrieval.dense import EmbeddingCache, cache_key, texts_checksum
from tests.linking.conftest import BatchSensitiveEncoder

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "service" / "demo" / "kb"


def train_demo_linker(cache_dir: Path, out: Path) -> str:
    """Train a small LightGBM linker on the demo documents; its model content id."""
    kb = KnowledgeBase.from_files([DEMO / "entities.jsonl"], [DEMO / "aliases.tsv"])
    encoder = BatchSensitiveEncoder()
    index = EntityIndex.build(kb, encoder, cache=EmbeddingCache(cache_dir))
    linker = EntityLinker(kb, encoder, entity_index=index)
    originals = read_benchmark(DEMO / "train.jsonl")
    documents = prepare_documents(linker, originals, "demo")
    documents += prepare_documents(linker, shorten_person_mentions(originals, kb), "demo")
    config = DisambiguatorConfig(n_estimators=60, num_leaves=7, min_child_samples=3)
    cv = cross_validate(linker, documents, config, folds=3)
    model = train_disambiguator(documents, config, first_pass_scores=cv.first_pass_scores, folds=3)
    model = model.with_threshold(cv.threshold, cv.margin)
    model.metrics = cv.to_dict()
    return model.save(out, parents={}, params={}, inputs={}).content_id


def test_same_seed_training_gives_one_model_cold_warm_and_cold_again(tmp_path: Path) -> None:
    cold = train_demo_linker(tmp_path / "cache", tmp_path / "cold")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    warm = train_demo_linker(tmp_path / "cache", tmp_path / "warm")
    again = train_demo_linker(tmp_path / "other-cache", tmp_path / "again")
    assert cold == warm == again


def test_a_stale_cache_entry_would_change_the_model(tmp_path: Path) -> None:
    """Why every input of the vectors is in the key: vectors 1e-6 away (another batching) make
    another model. Here a stale entry is forced under the current key, as a key that missed the
    embedded-text recipe, the runtime or the batching would let happen."""
    fresh = train_demo_linker(tmp_path / "cache", tmp_path / "fresh")
    (entry,) = (tmp_path / "cache").glob("*.npy")
    kb = KnowledgeBase.from_files([DEMO / "entities.jsonl"], [DEMO / "aliases.tsv"])
    texts = [entity_text(e.name, e.description) for e in kb.entities()]
    encoder = BatchSensitiveEncoder()
    stale = np.concatenate([encoder.encode(texts[i : i + 5]) for i in range(0, len(texts), 5)])
    assert entry.name == f"{cache_key(encoder)}-b64-{texts_checksum(texts)[:32]}.npy"
    assert 0 < np.abs(stale - np.load(entry)).max() < 1e-5
    np.save(entry, stale)
    assert train_demo_linker(tmp_path / "cache", tmp_path / "stale") != fresh


def test_the_model_does_not_depend_on_the_string_hash_seed(tmp_path: Path) -> None:
    """Set iteration order follows PYTHONHASHSEED: no feature, candidate list or fold may depend on it."""
    here = train_demo_linker(tmp_path / "cache", tmp_path / "here")
    script = (
        "import sys; from pathlib import Path; from tests.linking.test_reproducibility import train_demo_linker; "
        "print(train_demo_linker(Path(sys.argv[1]), Path(sys.argv[2])))"
    )
    ids = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = tmp_path / f"seed{seed}"
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"cache{seed}"), str(out)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        ids.add(result.stdout.strip().splitlines()[-1])
    assert ids == {here}
