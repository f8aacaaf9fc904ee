"""The embedded demo: its data files (corpus, queries, qrels, a small KB) and the index built from them."""

from service.demo.index import DEMO_BUILD, demo_corpus, demo_dir, demo_index, demo_kb_dir

__all__ = ["DEMO_BUILD", "demo_corpus", "demo_dir", "demo_index", "demo_kb_dir"]
