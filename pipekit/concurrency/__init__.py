"""Concurrency helpers (issue 16): being written; see pipekit.channels for channels."""

__all__: list[str] = []
