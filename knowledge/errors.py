"""The knowledge base's failures, importable without its engines (the gateway maps them to 503)."""


class EmbedderUnavailable(Exception):
    """An embedder cannot be loaded or run (missing weights, out of memory)."""


class VectorStoreUnavailable(Exception):
    """The vector store cannot be reached or refused the call."""
