"""Task-weighting strategies, one file each, behind one interface (see base.py); registry by name.

Paper's five: ew, uw, rlw, aligned_mtl, fairgrad. Also: dwa, gradnorm, mgda, pcgrad, cagrad.
"""

from __future__ import annotations

from mtlue.registry import load_registered


WEIGHTINGS = {
    "ew": "mtlue.weighting.ew:EqualWeighting",
    "uw": "mtlue.weighting.uw:UncertaintyWeighting",
    "rlw": "mtlue.weighting.rlw:RandomLossWeighting",
    "aligned_mtl": "mtlue.weighting.aligned_mtl:AlignedMTL",
    "fairgrad": "mtlue.weighting.fairgrad:FairGrad",
    "dwa": "mtlue.weighting.dwa:DynamicWeightAverage",
    "gradnorm": "mtlue.weighting.gradnorm:GradNorm",
    "mgda": "mtlue.weighting.mgda:MGDA",
    "pcgrad": "mtlue.weighting.pcgrad:PCGrad",
    "cagrad": "mtlue.weighting.cagrad:CAGrad",
}
PAPER_WEIGHTINGS = ("ew", "uw", "rlw", "aligned_mtl", "fairgrad")


def weighting_class(name: str):
    return load_registered(WEIGHTINGS, name, "--weighting")


def build_weighting(name: str, num_tasks: int, **kwargs):
    """Instantiate strategy `name` for K tasks; kwargs: generator, grad_space, grad_method, chunk, and its own knobs."""
    return weighting_class(name)(num_tasks, **kwargs)


__all__ = ["WEIGHTINGS", "PAPER_WEIGHTINGS", "weighting_class", "build_weighting"]
