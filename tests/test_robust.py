"""Defenses as one registry, their differentiable forms, and the defense-aware generator (`--robust`)."""

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mtlue.defenses as defenses
from mtlue.data import open_source
from mtlue.data.base import TaskSpec
from mtlue.defenses import DEFENSES, Entry, build_defense, canonical_defense_name
from mtlue.defenses.squeezing import DifferentiableJPEG, bit_depth_reduction, grayscale, jpeg, jpeg_differentiable
from mtlue.errors import ConfigError
from mtlue.models.mtl import build_model
from mtlue.protect import protect_config
from mtlue.protect.config import MTLUEConfig, SurrogateConfig
from mtlue.protect.driver import protect_source
from mtlue.protect.robust import ERASERS, RobustEOT, parse_robust
from mtlue.recipe import load_recipe

CPU = torch.device("cpu")
SPEC = "shapes:n=48,size=16,seed=3"
TASKS = (TaskSpec("digit", "multiclass", 10), TaskSpec("even", "binary", 2))
DIGITS_RECIPE = str(Path(__file__).resolve().parent.parent / "pipelines" / "digits-robust.toml")


def images(batch=4, channels=3, size=16, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


# -- the registry -------------------------------------------------------------------------------
def test_every_registered_defense_and_alias_builds_from_its_one_line(monkeypatch):
    for pattern, entry in DEFENSES.items():
        name = canonical_defense_name(pattern.split("<")[0])
        hook = build_defense(name, TASKS, generator=torch.Generator().manual_seed(0))
        assert (hook is None) == (entry.factory is None) and (hook is None or hook.name == name)
    assert [canonical_defense_name(a) for a in ("ueraser", "ueraser-lite", "JPEG", "bdr", "", None)] == \
        ["ueraser_lite", "ueraser_lite", "jpeg10", "bdr2", "none", "none"]
    # a new defense is one registry line (here reusing an existing file's factory)
    monkeypatch.setitem(DEFENSES, "blur<k>", Entry("squeezing:bdr_defense", "test", (1, 4, 3, "kernel")))
    assert canonical_defense_name("blur") == "blur3" and build_defense("blur2").name == "bdr2"
    with pytest.raises(ConfigError, match="kernel must be in 1..4, got 5"):
        canonical_defense_name("blur5")


def test_functions_and_modules_are_exported_from_the_package_without_a_table():
    assert defenses.jpeg is jpeg and defenses.DifferentiableJPEG is DifferentiableJPEG
    assert defenses.MixUp.__name__ == "MixUp" and defenses.TransformDefense.__name__ == "TransformDefense"
    with pytest.raises(AttributeError):
        defenses.not_a_defense


# -- differentiable forms -----------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_differentiable_jpeg_is_close_to_pil_at_quality_10_and_passes_a_real_gradient(channels):
    x = images(channels=channels).requires_grad_(True)
    coded = jpeg_differentiable(x, 10)
    assert coded.shape == x.shape and coded.min() >= 0 and coded.max() <= 1
    pil = jpeg(x.detach(), 10)
    assert (coded.detach() - pil).abs().mean() < 0.5 * (x.detach() - pil).abs().mean()  # it codes like JPEG
    coded.sum().backward()
    assert x.grad.abs().sum() > 0 and not torch.allclose(x.grad, torch.ones_like(x.grad))  # not straight-through
    for bad in (0, 101):
        with pytest.raises(ConfigError, match="quality must be in 1..100"):
            jpeg_differentiable(x.detach(), bad)


def test_differentiable_jpeg_module_draws_a_quality_per_image_from_its_range():
    module = DifferentiableJPEG((10, 30), generator=torch.Generator().manual_seed(0))
    x = images(batch=8)
    assert not torch.equal(module(x), module(x))  # fresh draws
    fixed = DifferentiableJPEG(10)
    assert torch.equal(fixed(x), jpeg_differentiable(x, torch.full((8,), 10.0)))
    with pytest.raises(ConfigError):
        DifferentiableJPEG((30, 10))


def test_bdr_is_straight_through_and_grayscale_differentiable():
    x = images().requires_grad_(True)
    bit_depth_reduction(x, 2).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    x.grad = None
    grayscale(x)[:, 0].sum().backward()
    assert torch.allclose(x.grad[:, 0], torch.full_like(x.grad[:, 0], 0.299), atol=1e-6)


# -- the robust option --------------------------------------------------------------------------
def test_robust_names_parse_in_registry_order_and_unknown_ones_are_refused():
    assert parse_robust("at, JPEG,bdr") == ("jpeg", "bdr", "at") and parse_robust(["erase"]) == ("erase",)
    assert parse_robust(None) == () and parse_robust("none") == () and parse_robust([" JPEG"]) == ("jpeg",)
    with pytest.raises(ConfigError, match=r"--robust 'blur': unknown \(valid: jpeg, bdr, gray, erase, at\)"):
        parse_robust("jpeg,blur")
    assert MTLUEConfig(robust=["bdr", "jpeg"]).robust == ("jpeg", "bdr")


def test_robust_joins_the_resume_key_only_when_set():
    assert "robust" not in MTLUEConfig().resume_settings()  # generators trained before --robust are reused
    assert MTLUEConfig(robust=("jpeg",)).resume_settings()["robust"] == ["jpeg"]


def test_cli_refuses_unknown_robust_names_gray_on_one_channel_and_other_methods(tmp_path):
    from cli import main

    runner = CliRunner()
    for args, message in ((["--method", "mtlue", "--robust", "jpeg,blur"], "--robust 'blur': unknown"),
                          (["--method", "mtlue", "--robust", "gray", "--epochs", "1"],
                           "--robust gray: the source's images have 1"),
                          (["--method", "lsp", "--robust", "jpeg"], "--robust applies to --method mtlue, not lsp")):
        result = runner.invoke(main, ["protect", "digits", str(tmp_path / "S"), "--quiet", *args])
        assert result.exit_code != 0 and message in result.output, result.output
        assert not (tmp_path / "S").exists()


def test_a_recipe_with_an_unknown_robust_name_is_refused_at_plan_time():
    from mtlue.pipeline import plan_run

    assert load_recipe(DIGITS_RECIPE).protect["robust"] == ["jpeg", "bdr", "erase", "at"]
    with pytest.raises(ConfigError, match="blur"):
        plan_run(load_recipe(DIGITS_RECIPE, None, ['protect.robust=["blur"]']))


def test_every_robust_draw_keeps_shapes_and_passes_gradient_to_the_poisoned_images():
    torch.manual_seed(0)
    model = build_model(TASKS, "small_cnn", in_channels=3, image_size=16).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    eot = RobustEOT(("jpeg", "bdr", "gray", "erase", "at"), 8 / 255)
    labels = {"digit": torch.arange(4) % 10, "even": torch.arange(4) % 2}
    masks = {name: torch.ones(4, dtype=torch.bool) for name in labels}
    seen = set()
    for seed in range(40):
        eot.reseed(seed)
        choice = eot._draw(eot.choices)  # the draw the call below makes
        eot.reseed(seed)
        x = images().requires_grad_(True)
        out, targets = eot(x, labels, masks, model)
        seen.add(choice)
        assert out.shape == x.shape and sum(w for w, *_ in targets) == pytest.approx(1.0)
        model(out)["digit"].sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, choice
        if choice == "at":
            assert 0 < (out - x).detach().abs().max() <= 4 / 255 + 1e-6  # radius ε/2
    assert seen == {"none", "jpeg", "bdr", "gray", "at", *ERASERS}


def test_a_robust_protect_run_records_its_defenses_and_differs_from_a_plain_one(tmp_path):
    source = open_source(SPEC)
    base = dict(method="mtlue", base="em", epochs=1, batch_size=16, generator_width=8, seed=1,
                surrogate=SurrogateConfig(backbone="small_cnn"))
    plain = protect_source(source, tmp_path / "A", protect_config(base), CPU, progress=False)["protection"]
    robust = protect_source(source, tmp_path / "B", protect_config({**base, "robust": ["jpeg", "gray", "erase"]}),
                            CPU, progress=False)["protection"]
    again = protect_source(source, tmp_path / "C", protect_config({**base, "robust": ["jpeg", "gray", "erase"]}),
                           CPU, progress=False)["protection"]
    assert plain["robust"] == [] and plain["robust_rules"] is None
    assert robust["robust"] == ["jpeg", "gray", "erase"] and robust["config"]["robust"] == ["jpeg", "gray", "erase"]
    assert robust["robust_rules"]["jpeg_quality"][0] == 10
    assert plain["generator_sha256"] != robust["generator_sha256"] == again["generator_sha256"]  # seeded


def test_publication_guidance_quotes_this_stores_measured_jpeg_row_and_says_png_keeps_it():
    from mtlue.release.guidance import publication_guidance

    assert publication_guidance(None, None) == []
    verification = {"groups": [{"profile": "plain", "weighting": "ew", "defense": "none", "worst_learnability": 0.1},
                               {"profile": "plain", "weighting": "ew", "defense": "jpeg10", "worst_learnability": 0.36}]}
    lines = publication_guidance({"method": "mtlue", "robust": []}, verification)
    assert "PNG" in lines[0] and "jpeg10 retains 0.36 (plain/ew)" in lines[1]
    assert "did not train through JPEG" in publication_guidance({"method": "mtlue", "robust": []}, None)[1]


def test_publication_guidance_quotes_the_worst_jpeg_group_over_weightings():
    from mtlue.release.guidance import publication_guidance

    groups = [{"profile": "plain", "weighting": w, "defense": "jpeg10", "worst_learnability": v}
              for w, v in (("uw", 0.7), ("ew", 0.3))]
    lines = publication_guidance({"method": "mtlue"}, {"groups": groups})
    assert "jpeg10 retains 0.70 (plain/uw)" in lines[1] and "holds at <= 0.5" in lines[1]


# -- dense label maps ---------------------------------------------------------------------------
DENSE_TASKS = (TaskSpec("seg", "segmentation", 3), TaskSpec("objects", "multiclass", 4))


def test_cutmix_pastes_dense_label_maps_with_its_box_and_weights_image_labels_by_area():
    from mtlue.defenses.mixing import cutmix

    x = images(batch=6, size=16)
    seg = torch.randint(0, 3, (6, 16, 16), generator=torch.Generator().manual_seed(1))
    labels = {"seg": seg, "objects": torch.arange(6) % 4}
    masks = {name: torch.ones(6, dtype=torch.bool) for name in labels}
    masks["seg"][0] = False
    mixed, targets = build_defense("cutmix", DENSE_TASKS, generator=torch.Generator().manual_seed(2))(x, labels, masks, None)
    _, perm, area = cutmix(x, 1.0, torch.Generator().manual_seed(2))  # the same draw
    box = (mixed != x).any(dim=1).any(dim=0)  # where the images were pasted (H, W)
    (lam, kept, kept_masks), (rest, pasted, pasted_masks) = targets
    assert lam == area and rest == pytest.approx(1.0 - area) and 0 < box.sum() < 16 * 16
    assert torch.equal(kept["objects"], labels["objects"]) and torch.equal(pasted["objects"], labels["objects"][perm])
    assert torch.equal(kept["seg"], torch.where(box, seg[perm], seg)) and torch.equal(pasted["seg"], kept["seg"])
    assert torch.equal(kept_masks["seg"], masks["seg"] & masks["seg"][perm]) and torch.equal(pasted_masks["seg"],
                                                                                              kept_masks["seg"])


def test_ueraser_lite_is_refused_for_dense_tasks_by_the_defense_and_by_robust_erase():
    from mtlue.protect.robust import check_robust_for

    with pytest.raises(ConfigError, match=r"--defense ueraser_lite: its random affine .* task 'seg' \(segmentation\)"):
        build_defense("ueraser", DENSE_TASKS)
    assert build_defense("ueraser_lite", TASKS) is not None
    with pytest.raises(ConfigError, match=r"--robust erase: its ueraser_lite .* task 'seg'"):
        check_robust_for(("erase",), 3, DENSE_TASKS)
    check_robust_for(("jpeg", "at"), 3, DENSE_TASKS)


def test_verify_refuses_ueraser_lite_on_a_dense_store_before_any_victim_trains(tmp_path):
    from mtlue.profiles import build_profiles
    from mtlue.train import TrainConfig
    from mtlue.verify import VerifyConfig, run_verification

    scenes = open_source("scenes:n=8,size=16,seed=0")
    base = TrainConfig(backbone="small_cnn", epochs=1, batch_size=8)
    config = VerifyConfig(profiles=build_profiles([{"name": "plain"}], base, ("ew",), "test"), seeds=(0,),
                          defenses=("cutmix", "ueraser"))
    with pytest.raises(ConfigError, match="--defense ueraser_lite: its random affine"):
        run_verification(scenes, scenes, config, str(tmp_path / "out"), CPU, progress=False)
    assert not (tmp_path / "out").exists()
