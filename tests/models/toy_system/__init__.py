"""A sixth system that lives outside ``src/``: its config, model (captions, change probability, change mask, beam
search, ONNX graphs), objective and tiny config, all in this package. One entry registers it
(``tests/models/conftest.py``'s ``TEST_SYSTEMS``), and the contract suite (``tests/models/test_contract_suite.py``)
then runs it through every surface like the built-in systems: the proof that adding a system is a package and one
registry line."""

from __future__ import annotations

from typing import Any

from changecap.models.registry import Architecture, Capabilities
from tests.models.toy_system.config import NAME, ToyConfig
from tests.models.toy_system.model import ToyCaptioner, build_toy
from tests.models.toy_system.objective import ToyObjective


def tiny_config() -> dict[str, Any]:
    model = {"architecture": NAME, "image_size": 32, "patch": 8, "decoder": {"dim": 16, "heads": 2}}
    return {"data": {"image_size": 32}, "model": model, "loss": {"change_weight": 0.5, "mask_weight": 0.5}}


ARCHITECTURE = Architecture(
    name=NAME,
    config_class=ToyConfig,
    build=build_toy,
    objective=ToyObjective,
    description="toy system: patch encoder, per-cell change head, Transformer caption decoder",
    tiny_config=tiny_config,
    capabilities=Capabilities(captions=True, change_probability=True, change_mask=True, beam_search=True, onnx=True),
)

__all__ = ["ARCHITECTURE", "ToyCaptioner", "ToyConfig", "ToyObjective"]
