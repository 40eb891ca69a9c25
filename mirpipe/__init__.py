"""mirpipe: an out-of-core data pipeline for music information retrieval research.

The top-level folders of the repository install as sub-packages of this one
(``mirpipe.pipeline``, ``mirpipe.stages``, ``mirpipe.storage``,
``mirpipe.models``), so nothing named ``models`` or ``storage`` lands on a
user's ``sys.path``. Dependency direction: ``pipeline -> stages -> (models,
storage)``; ``registry`` and this module are imported by all of them.
"""

from __future__ import annotations

__version__ = "0.2.0"
