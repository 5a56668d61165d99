"""GX imported without the two heavy modules it loads for expectations this project never uses.

``import great_expectations`` imports every core expectation, and one of them
(``expect_column_kl_divergence_to_be_less_than``, with the KS-test metrics) imports ``scipy.stats`` and ``altair``
at module level: about 1.7 s of CPU of the 4.5 s GX's import costs (measured here), paid by every process that
validates under ``airflow dags test`` and by every worker's preload, and memory in every worker. Importing this
module first puts a stand-in for each in ``sys.modules``: the import statements find it and bind it, and the first
attribute read of it imports the real module and answers from it, so an expectation or renderer that does use
them still works, and only a process that never does skips the cost. (``importlib.util.LazyLoader`` would be the
standard library's way, but on Python 3.11 the import statement itself reads the module's ``__spec__`` and that
read loads it.) Every GX import in the project comes after this module's: ``five_level`` and ``runner`` import it
first.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

DEFERRED = ("scipy.stats", "altair")
_LOCK = threading.Lock()


class Deferred(types.ModuleType):
    """Stands in for a module not imported yet; the first attribute it lacks imports the module and hands over."""

    def __init__(self, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(spec.name)
        self.__spec__ = spec  # what the import system reads to see the module is there (and not initialising)

    def __getattr__(self, attr: str) -> Any:
        return getattr(load(self.__name__), attr)


def load(name: str) -> types.ModuleType:
    """The real module ``name``, imported now if only its stand-in is there."""
    with _LOCK:
        module = sys.modules.get(name)
        if isinstance(module, Deferred):
            del sys.modules[name]
            module = importlib.import_module(name)
        return module if module is not None else importlib.import_module(name)


def _defer(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is not None:
        sys.modules[name] = Deferred(spec)


for _name in DEFERRED:
    _defer(_name)
