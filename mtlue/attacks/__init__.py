"""L∞ attacks on multi-task models (PGD, FGSM, APGD) with objectives single:<task>, total, dgba, signsum.

torchattacks-style: `PGD(model, eps=8/255, alpha=2/255, steps=25, objective="dgba")(images, labels, masks)`.
"""

from __future__ import annotations

from mtlue.registry import load_registered


# short name -> "module:Class"; adding an attack is one file and one line here.
ATTACKS = {
    "pgd": "mtlue.attacks.pgd:PGD",
    "fgsm": "mtlue.attacks.fgsm:FGSM",
    "apgd": "mtlue.attacks.apgd:APGD",
}


def attack_class(name: str):
    return load_registered(ATTACKS, name, "--attack")


def build_attack(name: str, model, eps: float, alpha: float, steps: int, objective, targeted: bool = False,
                 weights=None, generator=None, random_start: bool | None = None):
    """An attack by short name with the hyper-parameters that apply to it (FGSM ignores alpha/steps)."""
    cls = attack_class(name)
    common = dict(eps=eps, objective=objective, targeted=targeted, weights=weights, generator=generator)
    if name == "pgd":
        return cls(model, alpha=alpha, steps=steps, random_start=True if random_start is None else random_start, **common)
    if name == "apgd":
        return cls(model, steps=steps, random_start=bool(random_start), **common)
    return cls(model, **common)


def __getattr__(name):
    # PGD/FGSM/APGD importable from mtlue.attacks without importing torch at package import
    for key, target in ATTACKS.items():
        if target.endswith(":" + name):
            return attack_class(key)
    raise AttributeError(f"module 'mtlue.attacks' has no attribute {name!r}")


__all__ = ["ATTACKS", "attack_class", "build_attack", "PGD", "FGSM", "APGD"]
