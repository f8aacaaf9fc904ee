"""The embedded demo index: built once per corpus, encoder weights and runtime, then reused."""

from __future__ import annotations

from service.demo import DEMO_BUILD, demo_index
from tests.conftest import FakeEncoder


def test_demo_index_is_built_once_and_kept_apart_per_runtime(tmp_path) -> None:
    encoder = FakeEncoder(["plant", "sugar", "code", "cat"])
    first = demo_index(encoder, tmp_path)
    assert demo_index(encoder, tmp_path).version == first.version  # reused, not rebuilt
    assert len(encoder.calls) > 0
    calls = len(encoder.calls)
    quantized = FakeEncoder(["plant", "sugar", "code", "cat"])
    quantized.cache_key = f"{quantized.checksum}-onnx-int8"  # same weights, another runtime
    demo_index(quantized, tmp_path)
    names = sorted(p.name for p in (tmp_path / "demo-index").iterdir())
    assert len(names) == 2 and all(n.endswith(f"-b{DEMO_BUILD}") for n in names)
    assert any(quantized.cache_key in n for n in names)
    assert len(encoder.calls) == calls
    assert len(first) > 100
