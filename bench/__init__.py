"""vigil's benchmark: figures, not pass/fail.

``python -m bench.run [SECTION ...]`` runs the sections (``--list`` names
them) and prints a markdown report; ``bench/results/latest.json`` gets the
same figures. Sections live in ``bench/section_*.py`` and register
themselves with ``bench.harness.section``; the peer servers the figures are
compared against are ``bench/peer_*.py``.
"""
