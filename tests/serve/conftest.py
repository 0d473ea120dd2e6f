"""The inference fixtures (tiny saved models) for the server tests."""

from tests.inference.conftest import _one_thread, data_root, model_dir, scc_dir, vocab  # noqa: F401
