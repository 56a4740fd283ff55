"""Defense-aware generator training (`mtlue protect --robust jpeg,bdr,gray,erase,at`): EOT over defenses.

Each generator batch is passed through one choice drawn uniformly from {no defense} ∪ the chosen
defenses before the surrogate sees it, so the generator minimises
E_{T ~ U(none, robust...)} L_b(F(aug(T(x + G(x, y)))), y) (expectation over transformations, Athalye
et al. 2018). The ops are the victims' own (mtlue.defenses), differentiable or straight-through:

  jpeg   kornia's differentiable JPEG, quality uniform in 10..30 per image (the attack runs at 10)
  bdr    bit-depth reduction to 2 bits, straight-through gradient
  gray   BT.601 grayscale (RGB sources only: a 1-channel image is already gray)
  erase  one of cutout, cutmix, mixup (label-weighted loss, as the victim's) and UEraser-lite
         (not with dense tasks: UEraser-lite's affine would move the image but not the label maps)
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
AT_STEP = 0.4  # PGD step as a fraction of ρ
RULES = {"draw": "uniform over none + robust, one per batch", "jpeg_quality": list(JPEG_QUALITY),
         "bdr_bits": BDR_BITS, "erasers": list(ERASERS), "at": {"radius_of_eps": AT_RADIUS, "steps": AT_STEPS,
                                                              "step_of_radius": AT_STEP},
         "surrogate_sees": list(IMAGE_ONLY)}


def parse_robust(value) -> tuple:
    """`--robust jpeg,bdr` or a recipe's list -> the names in registry order; ConfigError naming the bad one."""
    if value is None:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip().lower() if isinstance(n, str) else n for n in names]  # a recipe's list as the CLI's string
    names = [n for n in names if n not in ("", "none")]
    for name in names:
        if not isinstance(name, str) or name not in ROBUST_OPTIONS:
            raise ConfigError(f"--robust {name!r}: unknown (valid: {', '.join(ROBUST_OPTIONS)})")
    return tuple(n for n in ROBUST_OPTIONS if n in names)


def check_robust_for(names: tuple, channels: int, tasks=()) -> None:
    """Refuse a robust option that cannot act on these images or tasks: gray on 1-channel images, erase
    (its UEraser-lite) with dense tasks, as the victims' defense registry refuses it."""
    if "gray" in names and channels != 3:
        raise ConfigError(f"--robust gray: the source's images have {channels} channel(s); grayscale only "
                          f"changes RGB images (drop gray)")
    dense = [t for t in tasks if t.is_dense]
    if "erase" in names and dense:
        from mtlue.defenses import DEFENSES

        for eraser in ERASERS:
            if DEFENSES[eraser].not_dense:
                raise ConfigError(f"--robust erase: its {eraser} {DEFENSES[eraser].not_dense} of task "
                                  f"{dense[0].name!r} ({dense[0].kind}) (drop erase)")


class RobustEOT:
    """The per-batch defense draw of a robust generator run, seeded explicitly (`reseed`) for resume replay."""

    def __init__(self, names: tuple, eps: float):
        import torch

        from mtlue.defenses import build_defense
        from mtlue.defenses.squeezing import DifferentiableJPEG

        self.names = tuple(names)
        self.eps = float(eps)
        self.generator = torch.Generator()
        self.transforms = {}  # image-only ops (IMAGE_ONLY), name -> module on images
        self.mixers = {}  # label-mixing hooks (cutmix, mixup)
        if "jpeg" in names:
            self.transforms["jpeg"] = DifferentiableJPEG(JPEG_QUALITY, generator=self.generator)
        if "bdr" in names:
            self.transforms["bdr"] = build_defense(f"bdr{BDR_BITS}").transform
        if "gray" in names:
            self.transforms["gray"] = build_defense("grayscale").transform
        if "erase" in names:
            for eraser in ERASERS:
                hook = build_defense(eraser, generator=self.generator)
                if eraser in IMAGE_ONLY:
                    self.transforms[eraser] = hook.transform
                else:
                    self.mixers[eraser] = hook
        self.choices = ("none",) + tuple(c for n in self.names for c in (ERASERS if n == "erase" else (n,)))
        self.image_choices = tuple(c for c in self.choices if c == "none" or c in IMAGE_ONLY)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def _draw(self, choices: tuple) -> str:
        import torch

        index = int(torch.randint(0, len(choices), (1,), generator=self.generator))
        return choices[index]

    def __call__(self, images, labels: dict, masks: dict, model) -> tuple:
        """(defended images, [(weight, labels, masks), ...]) for the generator's loss on one batch."""
        choice = self._draw(self.choices)
        if choice in self.mixers:
            return self.mixers[choice](images, labels, masks, model)
        if choice == "at":
            images = images + (self._adversary(model)(images, labels, masks) - images).detach()
        elif choice != "none":
            images = self.transforms[choice](images)
        return images, [(1.0, labels, masks)]

    def images(self, images):
        """One draw over none + the image-only defenses chosen, for the surrogate's training batches."""
        choice = self._draw(self.image_choices)
        return images if choice == "none" else self.transforms[choice](images)

    def _adversary(self, model):
        from mtlue.attacks import PGD

        radius = self.eps * AT_RADIUS
        return PGD(model, eps=radius, alpha=radius * AT_STEP, steps=AT_STEPS, random_start=True, objective="total",
                   generator=self.generator)
