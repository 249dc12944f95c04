"""The one safe way to import OpenCV in collab: `import_cv2()`.

cv2's package ``__init__`` bootstraps itself: it takes the package out of ``sys.modules``, imports the
native extension under the same name, puts the package back, then attaches its Python submodules
(``cv2.data``, ``cv2.typing``, ...). A thread that imports cv2 while another one is in the middle of that
can be handed the bare native module or the package before ``cv2.data`` is attached, and a module that
bound that object at import time (``import cv2`` at its top) keeps it for the life of the process: on
one node every face task then failed with ``module 'cv2' has no attribute 'data'``.

So the first import happens under one process-wide lock, and every module of collab that runs in job
threads (the pool initializer, ``ml/images.py``, ``ml/detectors.py``, ...) gets cv2 from here: a module
that needs it at its top writes ``from collab_tui.ml.cvload import cv2`` (the same as ``cv2 = import_cv2()``,
never ``import cv2``). Importing this module costs nothing: cv2 is loaded on the first call (or the first
``cvload.cv2``) only, so ``collab --help`` and an idle daemon stay free of it.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import ModuleType

_lock = threading.Lock()
_cv2: ModuleType | None = None


def import_cv2() -> ModuleType:
    """The fully initialised ``cv2`` package (imported once, under a lock, on the first call)."""
    mod = _cv2
    if mod is not None:
        return mod
    return _import_locked()


def __getattr__(name: str) -> ModuleType:
    """``from collab_tui.ml.cvload import cv2``: `import_cv2()` written as an import."""
    if name == "cv2":
        return import_cv2()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _bootstrapping(mod: ModuleType) -> bool:
    """True while ``mod`` is not the finished package: still initialising, or the bare native core of the
    pip wheels (``cv2/cv2*.so`` or ``cv2/python-3.X/cv2*.so``, under the package's ``__init__.py``) that the
    bootstrap puts in ``sys.modules`` for a moment. A build that is one extension module (some
    distributions) is done."""
    if getattr(getattr(mod, "__spec__", None), "_initializing", False):
        return True
    if hasattr(mod, "__path__"):
        return False
    file = getattr(mod, "__file__", None)
    return bool(file) and any((d / "__init__.py").is_file() for d in Path(file).parents[:2])


def _import_locked() -> ModuleType:
    global _cv2
    with _lock:
        if _cv2 is None:
            import cv2

            for _ in range(500):  # another import of cv2, not through here, still bootstrapping: wait for it
                mod = sys.modules.get("cv2", cv2)
                if not _bootstrapping(mod):
                    cv2 = mod
                    break
                time.sleep(0.01)
            else:
                raise ImportError("cv2 is still half-initialised after 5 s (a concurrent import that never ended?)")
            if not hasattr(cv2, "data"):
                try:  # attach the cascades' folder if the bootstrap did not (some builds have none)
                    import cv2.data as data

                    cv2.data = data
                except ImportError:
                    pass
            _cv2 = cv2
        return _cv2
