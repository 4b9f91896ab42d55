"""The demo server's names under their earlier import path; see :mod:`pipekit.cli._serve`.

Kept only until every importer (``tests/test_browser.py``) imports from there.
"""

from .cli._serve import PeerReport, demo_resources, readings, serve_demo, stream_through_peer

__all__ = ["PeerReport", "demo_resources", "readings", "serve_demo", "stream_through_peer"]
