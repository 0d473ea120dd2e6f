"""``--embedding-model`` / ``--embedding-cache``: the optional embedding-similarity metric of ``evaluate``,
``eval-captions`` and ``compare``."""

from __future__ import annotations

import argparse
from typing import Any


def add_embedding_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("embedding similarity (optional, reported beside the standard metrics)")
    g.add_argument(
        "--embedding-model",
        metavar="DIR_OR_ID",
        help=(
            "sentence-transformers model (folder or Hub id, e.g. all-mpnet-base-v2; offline with HF_HUB_OFFLINE=1 "
            "it must be in the local cache; builtin:bag-of-words needs no weights): adds EmbedSim, the best cosine "
            "similarity of each hypothesis to a reference, averaged"
        ),
    )
    g.add_argument(
        "--embedding-cache",
        metavar="DIR",
        help="where caption embeddings are kept between runs (default ~/.cache/changecap/caption_embeddings)",
    )


def embedder_from_args(args: argparse.Namespace) -> Any:
    """``(embed, label)`` for ``--embedding-model``, or None when it is not given."""
    if not args.embedding_model:
        return None
    from changecap.inference.embedding import sentence_embedder

    return sentence_embedder(args.embedding_model, args.embedding_cache)
