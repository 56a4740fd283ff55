"""mtlue: unlearnable examples for multi-task image datasets (MTL-UE, ICML 2025)."""

__version__ = "0.1.0"
