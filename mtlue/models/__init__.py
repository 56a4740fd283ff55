"""Victim multi-task networks, task losses and the MTL-UE generator.

Light to import: submodules load on first attribute access.
"""

_LAZY = {
    "build_model": "mtlue.models.mtl",
    "save_checkpoint": "mtlue.models.mtl",
    "load_checkpoint": "mtlue.models.mtl",
    "MultiTaskNet": "mtlue.models.mtl",
    "SingleTaskNets": "mtlue.models.mtl",
    "BACKBONES": "mtlue.models.backbones",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mtlue.models' has no attribute {name!r}")


__all__ = list(_LAZY)
