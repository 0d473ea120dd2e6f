"""``changecap serve``: a local web page and JSON API around a saved model (extra ``serve``)."""

from changecap.serve.app import create_app, render_samples

__all__ = ["create_app", "render_samples"]
