"""The MTL-UE generator and its embedding regularisers."""

import pytest
import torch

from mtlue.data.base import TaskSpec
from mtlue.models.generator import build_generator, load_generator, save_generator
from mtlue.protect.regularisers import inter_task_loss, intra_task_loss

TASKS = (TaskSpec("digit", "multiclass", 4), TaskSpec("even", "binary", 2), TaskSpec("age", "regression", 1))


def _labels(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"digit": torch.randint(0, 4, (batch,), generator=g), "even": torch.randint(0, 2, (batch,), generator=g),
            "age": torch.rand(batch, generator=g)}


@pytest.mark.parametrize("shape", [(32, 32, 1), (33, 35, 3), (70, 70, 3), (128, 128, 1), (130, 130, 1)])
def test_delta_has_input_shape_and_stays_in_budget(shape):
    torch.manual_seed(0)
    generator = build_generator(TASKS, shape, epsilon=8 / 255)
    x = torch.rand(2, shape[2], shape[0], shape[1])
    with torch.no_grad():
        delta = generator(x, _labels(2))
    assert delta.shape == x.shape
    assert float(delta.abs().max()) <= 8 / 255 + 1e-7
    assert float(delta.abs().max()) > 0
    assert generator.stem == ("imagenet" if min(shape[:2]) >= 224 else "cifar")  # no stem given: by size


def test_embeddings_cover_classification_tasks_only_with_spatial_size_of_z():
    generator = build_generator(TASKS, (32, 32, 3), epsilon=8 / 255)
    tables = generator.embedding_tables()
    assert list(tables) == ["digit", "even"]
    assert tables["digit"].shape == (4, 16 * 16 * 16)  # S = 32 / 2
    assert tables["even"].shape == (2, 16 * 16 * 16)


def test_unprotected_task_gets_its_mean_embedding_so_delta_ignores_its_label():
    torch.manual_seed(0)
    generator = build_generator(TASKS, (16, 16, 3), epsilon=8 / 255).eval()
    x = torch.rand(3, 3, 16, 16)
    labels = _labels(3)
    flipped = dict(labels, even=1 - labels["even"])
    with torch.no_grad():
        partial = generator(x, labels, protected=("digit",))
        partial_flipped = generator(x, flipped, protected=("digit",))
        full = generator(x, labels)
        full_flipped = generator(x, flipped)
    assert torch.equal(partial, partial_flipped)
    assert not torch.equal(full, full_flipped)
    priors = generator.label_priors(labels, None, ("digit",), 3)
    mean_even = generator.embedding_tables()["even"].mean(0).reshape(16, 8, 8)
    assert torch.allclose(priors[:, 16:32], mean_even.expand(3, -1, -1, -1))


def test_missing_label_uses_the_mean_embedding():
    torch.manual_seed(0)
    generator = build_generator(TASKS, (16, 16, 3), epsilon=8 / 255).eval()
    x = torch.rand(2, 3, 16, 16)
    labels = _labels(2)
    masks = {"digit": torch.tensor([True, False])}
    with torch.no_grad():
        masked = generator(x, labels, masks)
        unprotected = generator(x, labels, protected=("even",))
    assert torch.allclose(masked[1], unprotected[1])
    assert not torch.allclose(masked[0], unprotected[0])


def test_saved_generator_reloads_to_identical_delta(tmp_path):
    torch.manual_seed(0)
    generator = build_generator(TASKS, (16, 16, 1), epsilon=4 / 255).eval()
    path = tmp_path / "g.pt"
    save_generator(generator, path, {"note": "x"})
    loaded, meta = load_generator(path, torch.device("cpu"))
    loaded.eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(generator(x, _labels(2)), loaded(x, _labels(2)))
    assert meta == {"note": "x"} and loaded.epsilon == pytest.approx(4 / 255)


def test_intra_is_two_when_a_task_has_identical_class_embeddings():
    row = torch.randn(1, 12)
    assert float(intra_task_loss({"t": row.repeat(3, 1)})) == pytest.approx(2.0, abs=1e-6)


def test_intra_is_one_for_orthogonal_and_zero_for_opposite_classes():
    eye = torch.eye(4)
    assert float(intra_task_loss({"t": eye})) == pytest.approx(1.0, abs=1e-6)
    pair = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    # per-task mean, then averaged over tasks: (1 + 0) / 2
    assert float(intra_task_loss({"a": eye, "b": pair})) == pytest.approx(0.5, abs=1e-6)


def test_inter_is_zero_for_orthogonal_tasks_and_one_for_parallel_ones():
    eye = torch.eye(6)
    tables = {"a": eye[:2], "b": eye[2:5], "c": eye[5:]}
    assert float(inter_task_loss(tables)) == pytest.approx(0.0, abs=1e-7)
    row = torch.randn(1, 6)
    assert float(inter_task_loss({"a": row.repeat(2, 1), "b": -row.repeat(3, 1)})) == pytest.approx(1.0, abs=1e-6)
    assert float(inter_task_loss({"a": torch.randn(3, 6)})) == 0.0


def test_regulariser_gradients_push_embeddings_apart():
    torch.manual_seed(0)
    weight = torch.randn(3, 8).requires_grad_(True)
    optimiser = torch.optim.Adam([weight], lr=0.1)
    before = float(intra_task_loss({"t": weight.detach()}))
    for _ in range(50):
        optimiser.zero_grad()
        intra_task_loss({"t": weight}).backward()
        optimiser.step()
    # three classes at best sit at cos = -1/2 from each other: intra -> 0.5
    assert float(intra_task_loss({"t": weight.detach()})) < min(before, 0.6)


def test_clamp_keeps_the_hard_bound_but_passes_gradient_where_saturated():
    from mtlue.models.generator import clamp_to_budget

    raw = torch.tensor([-0.5, -0.01, 0.0, 0.02, 0.9], requires_grad=True)
    eps = 8 / 255
    straight = clamp_to_budget(raw, eps, straight_through=True)
    hard = clamp_to_budget(raw, eps, straight_through=False)
    assert torch.equal(straight.detach(), hard.detach())
    assert float(straight.detach().abs().max()) <= eps + 1e-7
    straight.sum().backward()
    assert torch.equal(raw.grad, torch.ones(5))  # every pixel stays trainable
    raw.grad = None
    hard.sum().backward()
    assert raw.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # the reference code: saturated pixels get nothing
