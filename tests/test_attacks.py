"""Multi-task L∞ attacks: PGD/FGSM/APGD with single, total, dgba and signsum objectives."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mtlue.attacks import APGD, FGSM, PGD, build_attack
from mtlue.attacks.apgd import apgd_checkpoints
from mtlue.attacks.objectives import clean_labels, objective_direction, parse_objective
from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError

TASKS = (TaskSpec("smile", "binary", 2), TaskSpec("digit", "multiclass", 4), TaskSpec("age", "regression", 1))
OBJECTIVES = ("single:digit", "total", "dgba", "signsum")


class LinearMultiTask(nn.Module):
    """One linear head per task on the flattened, normalised image (the model interface of mtlue)."""

    def __init__(self, tasks, image_shape=(3, 6, 6), seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.tasks = tuple(tasks)
        size = image_shape[0] * image_shape[1] * image_shape[2]
        self.heads = nn.ModuleDict({t.name: nn.Linear(size, t.output_dim) for t in self.tasks})

    def forward(self, x):
        flat = ((x - 0.5) / 0.25).flatten(1)
        outputs = {}
        for t in self.tasks:
            out = self.heads[t.name](flat)
            outputs[t.name] = out.squeeze(1) if t.output_dim == 1 else out
        return outputs


class ConvMultiTask(LinearMultiTask):
    """A tiny conv net with BatchNorm and dropout (so train/eval mode matters) and one head per task."""

    def __init__(self, tasks, seed=0):
        super().__init__(tasks, (8, 2, 2), seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                                  nn.AdaptiveAvgPool2d(2))
        self.seen_training = []

    def forward(self, x):
        self.seen_training.append(self.training)
        return super().forward(self.body(x) * 0.25 + 0.5)


def random_batch(n=8, seed=0, shape=(3, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand((n,) + shape, generator=g)
    images[0] = 0.0  # pixels at the [0, 1] bounds exercise the clipping
    images[1] = 1.0
    labels = {"smile": torch.randint(0, 2, (n,), generator=g), "digit": torch.randint(0, 4, (n,), generator=g),
              "age": torch.randn(n, generator=g)}
    return images, labels


def hand_total_loss(outputs, labels):
    return (F.binary_cross_entropy_with_logits(outputs["smile"], labels["smile"].float())
            + F.cross_entropy(outputs["digit"], labels["digit"]) + (outputs["age"] - labels["age"]).abs().mean())


def test_pgd_equals_a_plain_hand_written_loop():
    model = LinearMultiTask(TASKS).eval()
    images, labels = random_batch()
    eps, alpha = 8 / 255, 2 / 255
    x = images.clone()
    for _ in range(7):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(hand_total_loss(model(x), labels), x)
        x = torch.clamp(torch.min(torch.max(x.detach() + alpha * grad.sign(), images - eps), images + eps), 0, 1)
    adversarial = PGD(model, eps=eps, alpha=alpha, steps=7, random_start=False, objective="total")(images, labels)
    assert torch.allclose(adversarial, x, atol=1e-7)


def test_pgd_random_start_is_reproducible_from_the_generator():
    model = LinearMultiTask(TASKS)
    images, labels = random_batch()
    runs = [PGD(model, steps=2, generator=torch.Generator().manual_seed(3))(images, labels) for _ in range(2)]
    other = PGD(model, steps=2, generator=torch.Generator().manual_seed(4))(images, labels)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], other)


def test_dgba_direction_is_sign_of_loss_normalised_gradient_sum_on_a_hand_case():
    # two L1 regression heads y_t = w_t·x: ℓ_t = |r_t|, ∇ℓ_t = sign(r_t)·w_t, so Σ_t ∇ℓ_t/ℓ_t = Σ_t sign(r_t)·w_t/|r_t|
    tasks = (TaskSpec("near", "regression", 1), TaskSpec("far", "regression", 1))
    model = LinearMultiTask(tasks, image_shape=(1, 1, 2)).eval()
    w_near, w_far = torch.tensor([1.0, -3.0]), torch.tensor([2.0, 1.0])
    with torch.no_grad():
        for head, w in ((model.heads["near"], w_near), (model.heads["far"], w_far)):
            head.weight.copy_(w[None]), head.bias.zero_()
    images = torch.tensor([[[[0.5, 0.5]]], [[[0.75, 0.25]]]])
    flat = ((images - 0.5) / 0.25).flatten(1)
    labels = {"near": flat @ w_near - torch.tensor([0.1, -2.0]), "far": flat @ w_far + torch.tensor([100.0, 0.5])}
    r_near, r_far = flat @ w_near - labels["near"], flat @ w_far - labels["far"]
    by_hand = (r_near.sign()[:, None] * w_near / r_near.abs()[:, None] + r_far.sign()[:, None] * w_far / r_far.abs()[:, None]) / 0.25
    # sample 0: the 'far' loss is 1000× larger; total follows it, dgba balances toward 'near'
    assert torch.equal(by_hand.sign()[0], torch.tensor([1.0, -1.0]))
    safe_labels, masks = clean_labels(tasks, labels, None, "cpu")
    for per_task in ("auto", "batched", "loop"):
        direction, _ = objective_direction(model, images, safe_labels, masks, parse_objective("dgba", tasks), per_task=per_task)
        assert torch.allclose(direction.flatten(1), by_hand, rtol=1e-4)
    total, _ = objective_direction(model, images, safe_labels, masks, parse_objective("total", tasks))
    assert not torch.equal(total.flatten(1)[0].sign(), by_hand[0].sign())


def test_signsum_is_the_sum_of_task_gradient_signs_batched_or_looped():
    model = ConvMultiTask(TASKS).eval()
    images, labels = random_batch()
    safe_labels, masks = clean_labels(TASKS, labels, None, "cpu")
    expected = 0
    for t in ("smile", "digit", "age"):
        direction, _ = objective_direction(model, images, safe_labels, masks, parse_objective(f"single:{t}", TASKS))
        expected = expected + direction.sign()
    for per_task in ("batched", "loop"):
        direction, _ = objective_direction(model, images, safe_labels, masks, parse_objective("signsum", TASKS), per_task=per_task)
        assert torch.equal(direction, expected)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("name", ("pgd", "fgsm", "apgd"))
def test_every_attack_and_objective_stays_in_the_eps_ball_and_image_range(name, objective):
    model = ConvMultiTask(TASKS)
    images, labels = random_batch()
    eps = 4 / 255
    attack = build_attack(name, model, eps=eps, alpha=2 / 255, steps=5, objective=objective,
                          generator=torch.Generator().manual_seed(0))
    adversarial = attack(images, labels)
    assert adversarial.shape == images.shape and torch.isfinite(adversarial).all()
    assert (adversarial - images).abs().max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert (adversarial != images).any()


def test_model_is_attacked_in_eval_mode_and_its_mode_restored():
    model = ConvMultiTask(TASKS).train()
    images, labels = random_batch()
    PGD(model, steps=2)(images, labels)
    assert model.training and model.seen_training and not any(model.seen_training)
    model.eval()
    FGSM(model)(images, labels)
    assert not model.training


def separable_problem(n, seed):
    """Two tasks written into the image as a ±0.05 brightness shift of its left and top halves."""
    g = torch.Generator().manual_seed(seed)
    smile, top = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    images = torch.rand(n, 3, 6, 6, generator=g) * 0.2 + 0.4
    images[..., :3] += 0.1 * (smile.float() - 0.5)[:, None, None, None]
    images[..., :3, :] += 0.1 * (top.float() - 0.5)[:, None, None, None]
    return images, {"smile": smile, "digit": 2 * top + smile}


@pytest.fixture(scope="module")
def trained_model():
    tasks = TASKS[:2]
    model = LinearMultiTask(tasks, seed=1)
    images, labels = separable_problem(512, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        outputs = model(images)
        loss = (F.binary_cross_entropy_with_logits(outputs["smile"], labels["smile"].float())
                + F.cross_entropy(outputs["digit"], labels["digit"]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def accuracies(model, images, labels):
    with torch.no_grad():
        outputs = model(images)
    return {"smile": ((outputs["smile"] > 0).long() == labels["smile"]).float().mean().item(),
            "digit": (outputs["digit"].argmax(1) == labels["digit"]).float().mean().item()}


@pytest.mark.parametrize("name", ("pgd", "fgsm", "apgd"))
@pytest.mark.parametrize("objective", ("total", "dgba", "signsum", "single:smile"))
def test_attacks_lower_the_accuracy_of_a_trained_model(trained_model, name, objective):
    images, labels = separable_problem(256, seed=1)
    clean = accuracies(trained_model, images, labels)
    assert min(clean.values()) > 0.85
    attack = build_attack(name, trained_model, eps=16 / 255, alpha=4 / 255, steps=10, objective=objective,
                          generator=torch.Generator().manual_seed(0))
    attacked = accuracies(trained_model, attack(images, labels), labels)
    assert attacked["smile"] < clean["smile"] - 0.3
    if objective != "single:smile":
        assert attacked["digit"] < clean["digit"] - 0.3


def test_targeted_attack_moves_predictions_toward_the_targets(trained_model):
    images, labels = separable_problem(256, seed=2)
    targets = {"smile": 1 - labels["smile"], "digit": 3 - labels["digit"]}  # both bits flipped, consistent
    before = accuracies(trained_model, images, targets)
    adversarial = PGD(trained_model, eps=16 / 255, alpha=4 / 255, steps=10, random_start=False,
                      objective="total", targeted=True)(images, targets)
    after = accuracies(trained_model, adversarial, targets)
    assert before["digit"] < 0.1 and after["digit"] > 0.5
    assert after["smile"] > before["smile"] + 0.5


def test_missing_labels_contribute_nothing():
    model = ConvMultiTask(TASKS).eval()
    images, labels = random_batch()
    nothing_known = {t.name: torch.zeros(len(images), dtype=torch.bool) for t in TASKS}
    for objective in OBJECTIVES:
        unmoved = PGD(model, steps=3, random_start=False, objective=objective)(images, labels, nothing_known)
        assert torch.equal(unmoved, images)
    # a task whose labels are all missing drops out of total: total == single on the labelled task,
    # even when the missing labels hold values no loss accepts (−1 class, NaN regression target)
    only_digit = {"smile": torch.zeros(8, dtype=torch.bool), "digit": torch.ones(8, dtype=torch.bool),
                  "age": torch.zeros(8, dtype=torch.bool)}
    junk = dict(labels, smile=torch.full((8,), -1), age=torch.full((8,), float("nan")))
    total = PGD(model, steps=3, random_start=False, objective="total")(images, junk, only_digit)
    single = PGD(model, steps=3, random_start=False, objective="single:digit")(images, labels)
    assert torch.allclose(total, single)
    # per-sample masks: a sample with no label at all is left alone, the others move
    partly = {t.name: torch.arange(8) % 2 == 0 for t in TASKS}
    for objective in ("total", "dgba", "signsum"):
        adversarial = PGD(model, steps=3, random_start=False, objective=objective)(images, junk, partly)
        assert torch.equal(adversarial[1::2], images[1::2]) and not torch.equal(adversarial[2::2], images[2::2])


def test_fixed_weights_reweight_total():
    model = ConvMultiTask(TASKS).eval()
    images, labels = random_batch()
    weighted = PGD(model, steps=3, random_start=False, objective="total", weights={"smile": 0, "age": 0})(images, labels)
    single = PGD(model, steps=3, random_start=False, objective="single:digit")(images, labels)
    assert torch.allclose(weighted, single)


def test_apgd_returns_each_samples_best_point_and_follows_the_paper_checkpoints():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    model = ConvMultiTask(TASKS).eval()
    images, labels = random_batch(16)
    for objective in ("total", "dgba"):
        attack = APGD(model, eps=8 / 255, steps=10, objective=objective)
        adversarial = attack(images, labels)
        safe_labels, masks = clean_labels(TASKS, labels, None, "cpu")
        from mtlue.attacks.objectives import sample_losses, sample_scores

        with torch.no_grad():
            clean = sample_losses(model, images, safe_labels, masks)
            attacked = sample_losses(model, adversarial, safe_labels, masks)
        gain = sample_scores(attack.objective, attacked, clean, masks, TASKS) - sample_scores(attack.objective, clean, clean, masks, TASKS)
        assert (gain >= 0).all() and (gain > 0).any()


def test_bad_objectives_name_the_option():
    model = LinearMultiTask(TASKS)
    with pytest.raises(ConfigError, match="no task 'mouth'"):
        PGD(model, objective="single:mouth")
    with pytest.raises(ConfigError, match="unknown objective"):
        PGD(model, objective="mean")
    with pytest.raises(ConfigError, match="'total' only"):
        PGD(model, objective="dgba", weights={"smile": 2.0})


def test_attack_command_reports_clean_and_adversarial_metrics(tmp_path):
    import json

    from click.testing import CliRunner

    from cli import main
    from mtlue.data import open_source
    from mtlue.models import build_model, save_checkpoint

    source = open_source("digits")
    model = build_model(source.tasks, "small_cnn", in_channels=source.image_shape[2], image_size=source.image_shape[0])
    save_checkpoint(model, tmp_path / "model.pt", {})
    runner = CliRunner()
    result = runner.invoke(main, ["attack", str(tmp_path / "model.pt"), "digits", "--objective", "dgba", "--limit", "24",
                                  "--batch-size", "16", "--steps", "2", "--device", "cpu", "--quiet",
                                  "--out", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["samples"] == 24 and report["objective"] == "dgba"
    assert set(report["tasks"]) == {t.name for t in source.tasks}
    assert report["max_linf"] <= 8 / 255 + 1e-6
    assert "average relative change" in result.output
    bad = runner.invoke(main, ["attack", str(tmp_path / "model.pt"), "digits", "--objective", "single:middle", "--device", "cpu"])
    assert bad.exit_code == 1 and "no task 'middle'" in bad.output


def test_targeting_can_differ_per_task():
    model = ConvMultiTask(TASKS).eval()
    images, labels = random_batch()
    safe_labels, masks = clean_labels(TASKS, labels, None, "cpu")
    single = {t: objective_direction(model, images, safe_labels, masks, parse_objective(f"single:{t}", TASKS))[0]
              for t in ("smile", "digit", "age")}
    mixed, _ = objective_direction(model, images, safe_labels, masks, parse_objective("total", TASKS),
                                   targeted={"smile": True})
    assert torch.allclose(mixed, -single["smile"] + single["digit"] + single["age"], atol=1e-6)
    everything, _ = objective_direction(model, images, safe_labels, masks, parse_objective("total", TASKS), targeted=True)
    assert torch.allclose(everything, -(single["smile"] + single["digit"] + single["age"]), atol=1e-6)
    with pytest.raises(ConfigError, match="no task 'mouth'"):
        PGD(model, targeted={"mouth": True})


def test_pgd_continues_from_a_given_start_point_inside_the_ball():
    model = ConvMultiTask(TASKS).eval()
    images, labels = random_batch()
    eps, alpha = 8 / 255, 2 / 255
    far = images + 0.5  # outside the ball: projected first
    start = torch.clamp(torch.min(torch.max(far, images - eps), images + eps), 0, 1)
    safe_labels, masks = clean_labels(TASKS, labels, None, "cpu")
    direction, _ = objective_direction(model, start, safe_labels, masks, parse_objective("total", TASKS))
    expected = torch.clamp(torch.min(torch.max(start + alpha * direction.sign(), images - eps), images + eps), 0, 1)
    adversarial = PGD(model, eps=eps, alpha=alpha, steps=1, objective="total")(images, labels, start=far)
    assert torch.allclose(adversarial, expected)
    with pytest.raises(ConfigError, match="no start point"):
        FGSM(model)(images, labels, start=far)
