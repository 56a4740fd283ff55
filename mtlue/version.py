"""The mtlue version, in a module of its own so library code can record it without importing the package's
public facade (mtlue/__init__.py), which sits above everything it re-exports."""

__version__ = "0.1.0"
