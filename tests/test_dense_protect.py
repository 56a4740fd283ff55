"""Dense MTL-UE: the label-map embedding's input encoding, the generator with dense tasks, the label-aware
EOT, dense base targets and stop statistic."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtlue.data.base import TaskSpec
from mtlue.models.generator import build_generator, load_generator
from mtlue.models.label_maps import encode_label_map, encoded_channels
from mtlue.dense_augment import LabelAwareEOT, dense_flips_allowed
from mtlue.protect.objectives import base_target

SEG = TaskSpec("seg", "segmentation", 4)
DEPTH = TaskSpec("depth", "depth", 1)
NORMAL = TaskSpec("normal", "normal", 3)
CLASS = TaskSpec("kind", "multiclass", 3, flip_safe=True)


def dense_labels(batch=2, height=16, width=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(-1, SEG.num_classes, (batch, height, width), generator=g)
    depth = torch.rand(batch, 1, height, width, generator=g) * 9 + 0.5
    depth[:, :, :3] = 0.0
    normal = F.normalize(torch.randn(batch, 3, height, width, generator=g), dim=1)
    normal[:, :, :, :4] = 0.0
    return {"seg": seg, "depth": depth, "normal": normal, "kind": torch.arange(batch) % 3}


def test_segmentation_encoding_has_a_void_channel():
    label = torch.tensor([[[0, 3, -1], [2, -1, 1]]])
    encoded = encode_label_map(SEG, label)
    assert encoded.shape == (1, encoded_channels(SEG), 2, 3) == (1, 5, 2, 3)
    assert torch.equal(encoded.sum(1), torch.ones(1, 2, 3))  # exactly one channel per pixel
    assert torch.equal(encoded[0, 4], (label[0] == -1).float())  # void -> the extra channel
    assert encoded[0, 3, 0, 1] == 1 and encoded[0, 0, 0, 0] == 1
    absent = encode_label_map(SEG, label, torch.tensor([False]))
    assert torch.equal(absent[0, 4], torch.ones(2, 3))  # a missing label is all void


def test_depth_and_normal_encodings_carry_validity():
    labels = dense_labels()
    depth = encode_label_map(DEPTH, labels["depth"])
    assert depth.shape[1] == 2
    invalid = labels["depth"][:, 0] == 0
    assert torch.equal(depth[:, 1], (~invalid).float())
    assert torch.all(depth[:, 0][invalid] == 0)
    assert torch.allclose(depth[:, 0][~invalid], torch.log1p(labels["depth"][:, 0][~invalid]))
    normal = encode_label_map(NORMAL, labels["normal"])
    assert normal.shape[1] == 4
    assert torch.equal(normal[:, 3], (labels["normal"].abs().sum(1) > 0).float())
    assert torch.equal(normal[:, :3], labels["normal"])
    absent = encode_label_map(NORMAL, labels["normal"], torch.tensor([True, False]))
    assert torch.all(absent[1] == 0) and torch.equal(absent[0], normal[0])


def test_generator_conditions_on_dense_label_maps():
    torch.manual_seed(0)
    tasks = [SEG, DEPTH, NORMAL, CLASS]
    generator = build_generator(tasks, (16, 24, 3), 8 / 255, "cifar", width=8).eval()
    x = torch.rand(2, 3, 16, 24)
    labels = dense_labels()
    delta = generator(x, labels)
    assert delta.shape == x.shape and float(delta.abs().max()) <= 8 / 255 + 1e-7
    # the label map drives δ; an unprotected task or a missing label means "all invalid"
    other = dict(labels, seg=torch.roll(labels["seg"], 5, dims=2))
    assert not torch.allclose(generator(x, other), delta)
    unprotected = generator(x, labels, protected=["depth", "normal", "kind"])
    missing = generator(x, labels, masks={"seg": torch.tensor([False, False])})
    assert torch.equal(unprotected, missing)
    # an unprotected task's label is not read: it may be left out
    without = {name: label for name, label in labels.items() if name not in ("seg", "normal")}
    assert torch.equal(generator(x, without, protected=["depth", "kind"]),
                       generator(x, labels, protected=["depth", "kind"]))
    assert not torch.allclose(unprotected, delta)
    # only classification tasks have lookup tables (the regularisers see no dense task)
    assert list(generator.embedding_tables()) == ["kind"]
    assert len(generator.label_maps) == 3


def test_generator_with_dense_tasks_is_reproducible():
    def make():
        torch.manual_seed(3)
        return build_generator([SEG, DEPTH], (16, 24, 3), 8 / 255, "cifar", width=8)

    x, labels = torch.rand(2, 3, 16, 24), dense_labels()
    a, b = make(), make()
    for g in (a, b):
        g(x, labels).square().sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb) and torch.equal(pa.grad, pb.grad)


def test_label_aware_eot_moves_label_maps_with_the_image():
    height, width = 16, 24
    columns = torch.arange(width, dtype=torch.float32).expand(height, width)
    x = (columns / width).expand(4, 3, height, width).clone()
    seg = (columns.long() % SEG.num_classes).expand(4, height, width).clone()
    depth = (columns + 1.0).expand(4, 1, height, width).clone()
    normal = torch.zeros(4, 3, height, width)
    normal[:, 0], normal[:, 2] = 0.6, 0.8
    labels = {"seg": seg, "depth": depth, "normal": normal, "kind": torch.tensor([0, 1, 2, 0])}
    torch.manual_seed(1)
    eot = LabelAwareEOT("crop_flip", (height, width, 3), [SEG, DEPTH, NORMAL, CLASS])
    flipped = 0
    for _ in range(5):
        out, moved = eot(x, labels)
        assert out.shape == x.shape and moved["seg"].shape == seg.shape and moved["depth"].shape == depth.shape
        assert torch.equal(moved["kind"], labels["kind"])
        valid = moved["depth"][:, 0] > 0
        # away from the padded border the label still names the image's column
        column = moved["depth"][:, 0] - 1
        assert torch.allclose(out[:, 0][valid], column[valid] / width)
        assert torch.equal(moved["seg"][valid], column[valid].long() % SEG.num_classes)
        assert torch.all(moved["seg"][~valid] == -1)  # the padded border carries no label
        normal_valid = moved["normal"].abs().sum(1) > 0
        assert torch.equal(normal_valid, valid)
        for b in range(4):
            row = out[b, 0, 0]
            is_flipped = bool((row[1:] - row[:-1]).sum() < 0)
            nx = moved["normal"][b, 0][normal_valid[b]]
            assert torch.allclose(nx, torch.full_like(nx, -0.6 if is_flipped else 0.6))
            flipped += is_flipped
    assert 0 < flipped < 20
    assert dense_flips_allowed([SEG, DEPTH, NORMAL, CLASS])
    assert not dense_flips_allowed([SEG, TaskSpec("left", "binary", 2)])


def test_segmentation_tap_target_shifts_classes_and_keeps_void():
    label = torch.tensor([[-1, 0, 1, 3]])
    target, descend = base_target("tap", SEG, label)
    assert descend and torch.equal(target, torch.tensor([[-1, 2, 3, 1]]))
    em_target, em_descend = base_target("em", SEG, label)
    assert em_descend and torch.equal(em_target, label)
    assert base_target("sep", DEPTH, torch.ones(1, 1, 2, 2))[1] is False  # ascended, as regression


def test_dense_stop_statistic_counts_valid_pixels_only():
    from mtlue.protect.surrogate import PoisonedError

    labels = dense_labels(seed=2)
    perfect = {"seg": F.one_hot(labels["seg"].clamp_min(0), SEG.num_classes).permute(0, 3, 1, 2).float() * 10,
               "depth": labels["depth"].clone(), "normal": labels["normal"] * 3}
    errors = PoisonedError([SEG, DEPTH, NORMAL], ["seg", "depth", "normal"])
    errors.add(perfect, labels)
    assert errors.worst() == 0.0
    assert errors.count["depth"] == int((labels["depth"] > 0).sum())
    wrong = {"seg": perfect["seg"].roll(1, 1), "depth": perfect["depth"] * 1.3, "normal": -perfect["normal"]}
    errors = PoisonedError([SEG, DEPTH, NORMAL], ["seg", "depth", "normal"])
    errors.add(wrong, labels, {"seg": torch.tensor([True, False])})
    assert errors.worst() == 1.0
    assert errors.count["seg"] == int((labels["seg"][0] >= 0).sum())  # the sample without a label is skipped
    assert all(errors.wrong[name] == errors.count[name] for name in ("seg", "depth", "normal"))


class PixelwiseModel(torch.nn.Module):
    """A 1×1-conv dense model: each output pixel sees only its own input pixel."""

    def __init__(self, tasks):
        super().__init__()
        self.tasks = tuple(tasks)
        torch.manual_seed(0)
        self.heads = torch.nn.ModuleList(torch.nn.Conv2d(3, t.output_dim, 1) for t in self.tasks)

    def forward(self, x):
        return {t.name: head(x) for t, head in zip(self.tasks, self.heads)}


@pytest.mark.parametrize("objective", ["total", "dgba"])
def test_dense_attacks_change_only_pixels_with_a_valid_label(objective):
    from mtlue.attacks import build_attack

    tasks = [SEG, DEPTH, NORMAL]
    model = PixelwiseModel(tasks).eval()
    labels = dense_labels(seed=4)
    labels["seg"][:, :3] = -1  # rows 0-2: no task has a label there (depth too, see dense_labels)
    labels["normal"][:, :, :3] = 0.0
    images = torch.rand(2, 3, 16, 24)
    attack = build_attack("pgd", model, eps=8 / 255, alpha=2 / 255, steps=3, objective=objective)
    attack.random_start = False
    adversarial = attack(images, {k: labels[k] for k in ("seg", "depth", "normal")})
    changed = (adversarial - images).abs().amax(1) > 0
    assert not changed[:, :3].any()  # nothing to gain where every label is invalid
    assert changed[:, 3:].float().mean() > 0.9


def test_dense_per_sample_losses_ignore_invalid_pixels():
    from mtlue.attacks.objectives import clean_labels, sample_losses

    tasks = [SEG, DEPTH, NORMAL]
    model = PixelwiseModel(tasks).eval()
    labels = {k: v for k, v in dense_labels(seed=5).items() if k != "kind"}
    safe, masks = clean_labels(tasks, labels, None, torch.device("cpu"))
    images = torch.rand(2, 3, 16, 24)
    other = images.clone()
    other[:, :, :3, :4] = torch.rand(2, 3, 3, 4)  # depth invalid in rows 0-2, normals in columns 0-3
    labels_void = dict(safe, seg=safe["seg"].clone())
    labels_void["seg"][:, :3, :4] = -1
    a = sample_losses(model, images, labels_void, masks)
    b = sample_losses(model, other, labels_void, masks)
    assert a.shape == (3, 2) and torch.allclose(a, b)
    masks["depth"] = torch.tensor([True, False])
    assert sample_losses(model, images, labels_void, masks)[1, 1] == 0


def dense_protect_config(**changes):
    from mtlue.protect import protect_config
    from mtlue.protect.config import SurrogateConfig

    base = dict(method="mtlue", base="em", epochs=2, batch_size=16, generator_width=8, seed=1,
                surrogate=SurrogateConfig(backbone="small_cnn"), samples_per_epoch=32)
    return protect_config({**base, **changes}, explicit=changes)


def test_dense_em_protect_round_trips_through_export_protect_and_verify(tmp_path):
    from click.testing import CliRunner

    from cli import main
    from mtlue.data import open_source
    from mtlue.protect.driver import protect_source

    clean_store = tmp_path / "clean"
    result = CliRunner().invoke(main, ["export", "scenes:n=40,size=16,seed=2", str(clean_store)])
    assert result.exit_code == 0, result.output
    clean = open_source(str(clean_store))
    manifest = protect_source(clean, tmp_path / "P", dense_protect_config(), torch.device("cpu"), progress=False)
    assert CliRunner().invoke(main, ["inspect", str(tmp_path / "P"), "--verify"]).exit_code == 0
    protected = open_source(str(tmp_path / "P"))
    before, after = next(clean.batches("train", 64)), next(protected.batches("train", 64))
    difference = np.abs(after.images.astype(int) - before.images.astype(int))
    assert difference.max() <= 8 and (difference > 0).mean() > 0.3
    for task in clean.tasks:  # dense labels and their invalid markers are stored untouched
        assert np.array_equal(after.labels[task.name], before.labels[task.name])
    assert manifest["protection"]["augment"] == "crop_flip"


def test_mixed_dense_and_classification_protect(tmp_path):
    from mtlue.data import open_source
    from mtlue.protect.driver import protect_source
    source = open_source("scenes:n=32,size=16,seed=3,mixed=1")
    assert {t.kind for t in source.tasks} == {"segmentation", "depth", "normal", "multiclass"}
    config = dense_protect_config(epochs=1)
    protect_source(source, tmp_path / "P", config, torch.device("cpu"), progress=False)
    generator, _ = load_generator(tmp_path / "P.work" / "generator.pt", torch.device("cpu"))
    assert list(generator.embedding_tables()) == ["objects"] and len(generator.label_maps) == 3
    history = torch.load(tmp_path / "P.work" / "generator.pt", weights_only=True)["meta"]["history"]
    assert history[-1]["intra"] > 0.0  # the classification task keeps its regulariser


def test_attack_report_gives_dense_metrics_and_their_relative_change():
    from mtlue.attacks import build_attack
    from mtlue.attacks.evaluate import evaluate_attack, format_report
    from mtlue.data import open_source

    source = open_source("scenes:n=16,size=16,seed=1")
    model = PixelwiseModel(source.tasks).eval()
    none = evaluate_attack(model, source, build_attack("pgd", model, eps=0.0, alpha=0.0, steps=1, objective="total"), limit=8)
    rows = none["tasks"]
    assert [rows[t]["metric"] for t in ("segmentation", "depth", "normal")] == ["miou", "abs_err", "mean_angle"]
    assert rows["depth"]["higher_is_better"] is False and rows["segmentation"]["higher_is_better"] is True
    assert set(rows["normal"]["metrics"]) == {"mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"}
    assert all(row["relative_change"] == 0 for row in rows.values())  # ε = 0: nothing changes
    attacked = evaluate_attack(model, source, build_attack("pgd", model, eps=8 / 255, alpha=2 / 255, steps=3,
                                                            objective="dgba"), limit=8)
    assert attacked["average_relative_change"] < 0  # degradation is negative, whichever way "better" points
    assert attacked["tasks"]["depth"]["metrics"]["abs_err"]["relative_change"] < 0
    assert "mean_angle" in format_report(attacked)
