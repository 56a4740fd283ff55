"""Every list of names comes from its registry: the verdict's defense grid, the CLI's choices and help.
Where `--help` cannot import a registry (it would import torch), the CLI's list is checked against it here."""

import re

import cli
from mtlue.attacks import ATTACKS
from mtlue.data.release import FORMATS
from mtlue.defenses import DEFENSES, canonical_defense_name, standard_defenses
from mtlue.models.backbones import BACKBONES, build_backbone
from mtlue.protect import METHODS
from mtlue.verdict import DEFENSES_KNOWN
from mtlue.weighting import PAPER_WEIGHTINGS, WEIGHTINGS


def option(command: str, name: str):
    return next(p for p in cli.main.commands[command].params if p.name == name)


def test_the_verdicts_defense_grid_is_every_registered_defense():
    assert DEFENSES_KNOWN == standard_defenses()
    assert len(DEFENSES_KNOWN) == len(DEFENSES) - 1  # all but none
    assert all(canonical_defense_name(name) == name for name in DEFENSES_KNOWN)


def test_the_clis_choices_and_defaults_are_the_registries():
    assert tuple(option("attack", "attack_name").type.choices) == tuple(ATTACKS)
    assert tuple(option("release", "fmt").type.choices) == FORMATS
    assert option("verify", "weightings").default == ",".join(PAPER_WEIGHTINGS)
    assert all(name in option("train", "weighting").help for name in WEIGHTINGS)
    assert all(re.sub(r"<.*", "", name) in option("train", "defense").help for name in DEFENSES)


def test_every_backbone_and_method_the_help_names_is_registered():
    named = re.findall(r"[a-z0-9_]+", option("train", "backbone").help)
    assert named and set(named) <= set(BACKBONES)
    assert all(re.search(rf"\b{name}\b", option("protect", "method").help) for name in METHODS)


def test_build_backbone_builds_from_the_registry():
    for name in ("small_cnn", "resnet8"):  # the cheap ones
        assert build_backbone(name, 3, 16)[1] > 0
    assert set(BACKBONES) >= {"resnet18", "resnet50", "vgg16_bn", "densenet121", "vit_b_16", "small_cnn"}
