"""Defense-aware generator training (`mtlue protect --robust jpeg,bdr,gray,erase,at`): EOT over defenses.

Each generator batch is passed through one choice drawn uniformly from {no defense} ∪ the chosen
defenses before the surrogate sees it, so the generator minimises
E_{T ~ U(none, robust...)} L_b(F(aug(T(x + G(x, y)))), y) (expectation over transformations, Athalye
et al. 2018). The ops are the victims' own (mtlue.defenses), differentiable or straight-through:

  jpeg   kornia's differentiable JPEG, quality uniform in 10..30 per image (the attack runs at 10)
  bdr    bit-depth reduction to 2 bits, straight-through gradient
  gray   BT.601 grayscale (RGB sources only: a 1-channel image is already gray)
  erase  one of cutout, cutmix, mixup (label-weighted loss, as the victim's) and UEraser-lite
  at     REM's min-min-max (Fu et al., ICLR 2022): a PGD adversary of radius ρ = ε/2 (5 steps, step ρ/2.5)
         against the surrogate is added to x + δ; δ's gradient flows through x + δ + η (η detached)

The EM surrogate trains on the same draws of the image-only defenses (jpeg, bdr, gray, cutout,
UEraser-lite), so it learns what survives them; mixing and the adversary act on the generator's loss only.
Imports torch on use: the config module reads ROBUST_OPTIONS and parse_robust for `--help`.
"""

from __future__ import annotations

from mtlue.errors import ConfigError

ROBUST_OPTIONS = ("jpeg", "bdr", "gray", "erase", "at")
JPEG_QUALITY = (10, 30)
BDR_BITS = 2
ERASERS = ("cutout", "cutmix", "mixup", "ueraser_lite")
IMAGE_ONLY = ("jpeg", "bdr", "gray", "cutout", "ueraser_lite")  # what the surrogate's training also sees
AT_RADIUS = 0.5  # ρ as a fraction of ε (REM: 4/255 against 8/255)
AT_STEPS = 5
RULES = {"draw": "uniform over none + robust, one per batch", "jpeg_quality": list(JPEG_QUALITY),
         "bdr_bits": BDR_BITS, "erasers": list(ERASERS), "at": {"radius_of_eps": AT_RADIUS, "steps": AT_STEPS,
                                                              "step_of_radius": 0.4},
         "surrogate_sees": list(IMAGE_ONLY)}


def parse_robust(value) -> tuple:
    """`--robust jpeg,bdr` or a recipe's list -> the names in registry order; ConfigError naming the bad one."""
    if value is None:
        return ()
    names = [v.strip().lower() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n not in ("", "none")]
    for name in names:
        if not isinstance(name, str) or name not in ROBUST_OPTIONS:
            raise ConfigError(f"--robust {name!r}: unknown (valid: {', '.join(ROBUST_OPTIONS)})")
    return tuple(n for n in ROBUST_OPTIONS if n in names)


def check_robust_for(names: tuple, channels: int) -> None:
    """Refuse a robust option that cannot act on these images (gray on 1-channel images)."""
    if "gray" in names and channels != 3:
        raise ConfigError(f"--robust gray: the source's images have {channels} channel(s); grayscale only "
                          f"changes RGB images (drop gray)")


class RobustEOT:
    """The per-batch defense draw of a robust generator run, seeded explicitly (`reseed`) for resume replay."""

    def __init__(self, names: tuple, eps: float):
        import torch

        from mtlue.defenses import build_defense
        from mtlue.defenses.squeezing import DifferentiableJPEG

        self.names = tuple(names)
        self.eps = float(eps)
        self.generator = torch.Generator()
        self.ops = {}
        if "jpeg" in names:
            self.ops["jpeg"] = DifferentiableJPEG(JPEG_QUALITY, generator=self.generator)
        if "bdr" in names:
            self.ops["bdr"] = build_defense(f"bdr{BDR_BITS}").transform
        if "gray" in names:
            self.ops["gray"] = build_defense("grayscale").transform
        if "erase" in names:
            for eraser in ERASERS:
                self.ops[eraser] = build_defense(eraser, generator=self.generator)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def _draw(self, choices: tuple) -> str:
        import torch

        index = int(torch.randint(0, len(choices), (1,), generator=self.generator))
        return choices[index]

    def _choices(self) -> tuple:
        choices = ["none"]
        for name in self.names:
            choices += list(ERASERS) if name == "erase" else [name]
        return tuple(choices)

    def __call__(self, images, labels: dict, masks: dict, model) -> tuple:
        """(defended images, [(weight, labels, masks), ...]) for the generator's loss on one batch."""
        choice = self._draw(self._choices())
        if choice == "none":
            return images, [(1.0, labels, masks)]
        if choice == "at":
            return images + (self._adversary(model)(images, labels, masks) - images).detach(), [(1.0, labels, masks)]
        op = self.ops[choice]
        if choice in ("cutmix", "mixup"):
            return op(images, labels, masks, model)
        out = op(images, labels, masks, model)[0] if choice in ERASERS else op(images)
        return out, [(1.0, labels, masks)]

    def images(self, images):
        """One draw over none + the image-only defenses chosen, for the surrogate's training batches."""
        choices = ("none",) + tuple(c for c in self._choices() if c in IMAGE_ONLY)
        choice = self._draw(choices)
        if choice == "none":
            return images
        op = self.ops[choice]
        return op(images, None, None, None)[0] if choice in ERASERS else op(images)

    def _adversary(self, model):
        from mtlue.attacks import PGD

        radius = self.eps * AT_RADIUS
        return PGD(model, eps=radius, alpha=radius * 0.4, steps=AT_STEPS, random_start=True, objective="total",
                   generator=self.generator)
