"""Task weightings: hand-computed cases against the published formulas, and the backward contract."""

import math

import numpy as np
import pytest
import torch

from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError
from mtlue.models import build_model
from mtlue.models.losses import task_losses
from mtlue.weighting import WEIGHTINGS, build_weighting

ORTHOGONAL = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
CONFLICTING = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
LOSSES = torch.tensor([1.0, 1.0], dtype=torch.float64)
GRADIENT_BASED = [name for name in WEIGHTINGS if build_weighting(name, 2).uses_gradients]



def combined(name, grads, **kwargs):
    weighting = build_weighting(name, len(grads), **kwargs)
    alpha = weighting.weights_from_gram(grads @ grads.T, LOSSES)
    return alpha, alpha @ grads


def test_aligned_mtl_equalises_orthogonal_gradients():
    # M = diag(1, 4): B = sqrt(1) * diag(1, 1/2) -> alpha = (1, 1/2), update (1, 1).
    alpha, update = combined("aligned_mtl", ORTHOGONAL)
    torch.testing.assert_close(alpha, torch.tensor([1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(update, torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_aligned_mtl_matches_rank_matched_formula_on_conflict():
    from scipy.linalg import sqrtm

    gram = (CONFLICTING @ CONFLICTING.T).numpy()
    lambda_min = np.linalg.eigvalsh(gram).min()
    expected = math.sqrt(lambda_min) * np.linalg.inv(np.real(sqrtm(gram))).sum(0)
    alpha, _ = combined("aligned_mtl", CONFLICTING)
    np.testing.assert_allclose(alpha.numpy(), expected, rtol=1e-6)
    # the aligned rows B·G are orthogonal with equal norm sqrt(lambda_min)
    balance = math.sqrt(lambda_min) * np.linalg.inv(np.real(sqrtm(gram)))
    aligned = balance @ CONFLICTING.numpy()
    np.testing.assert_allclose(aligned @ aligned.T, lambda_min * np.eye(2), atol=1e-9)


@pytest.mark.parametrize("grads", [ORTHOGONAL, CONFLICTING])
def test_fairgrad_solves_gram_w_equals_inverse_w(grads):
    alpha, _ = combined("fairgrad", grads)
    gram = grads @ grads.T
    assert (alpha > 0).all()
    torch.testing.assert_close(gram @ alpha, 1.0 / alpha, atol=1e-6, rtol=1e-6)
    if grads is ORTHOGONAL:
        torch.testing.assert_close(alpha, torch.tensor([1.0, 0.5], dtype=torch.float64), atol=1e-6, rtol=0)


def test_mgda_finds_min_norm_point():
    alpha, update = combined("mgda", ORTHOGONAL)
    torch.testing.assert_close(alpha, torch.tensor([0.8, 0.2], dtype=torch.float64))
    alpha, update = combined("mgda", CONFLICTING)  # min over t of |t g1 + (1-t) g2|^2 at t = 0.6
    torch.testing.assert_close(alpha, torch.tensor([0.6, 0.4], dtype=torch.float64))
    torch.testing.assert_close(update @ CONFLICTING[0], update @ CONFLICTING[1])


def test_pcgrad_projects_only_conflicting_pairs():
    _, update = combined("pcgrad", ORTHOGONAL)
    torch.testing.assert_close(update, torch.tensor([1.0, 2.0], dtype=torch.float64))
    # g1' = g1 - (g1.g2/|g2|^2) g2 = (0.5, 0.5); g2' = g2 - (g2.g1/|g1|^2) g1 = (0, 1)
    _, update = combined("pcgrad", CONFLICTING)
    torch.testing.assert_close(update, torch.tensor([0.5, 1.5], dtype=torch.float64))


def test_cagrad_on_symmetric_and_conflicting_gradients():
    unit = torch.eye(2, dtype=torch.float64)
    alpha, _ = combined("cagrad", unit)  # symmetric: d = (1 + c) mean, rescaled by 1/(1 + c^2)
    torch.testing.assert_close(alpha, torch.full((2,), 0.5 * 1.5 / 1.25, dtype=torch.float64), atol=1e-4, rtol=0)
    alpha, update = combined("cagrad", CONFLICTING, rescale=False)
    mean = CONFLICTING.mean(0)
    assert (update - mean).norm() <= 0.5 * mean.norm() + 1e-6
    assert (CONFLICTING @ update).min() >= (CONFLICTING @ mean).min() - 1e-6


def test_uncertainty_weighting_formula_and_gradient():
    weighting = build_weighting("uw", 2)
    losses = torch.tensor([2.0, 0.5])
    total, weights = weighting.total_loss(losses)
    torch.testing.assert_close(weights.detach(), torch.full((2,), math.exp(0.5) / 2))
    torch.testing.assert_close(total.detach(), (losses * math.exp(0.5) / 2 - 0.25).sum())
    total.backward()
    torch.testing.assert_close(weighting.log_vars.grad, -losses * math.exp(0.5) / 2 + 0.5)


def test_rlw_weights_sum_to_k_and_repeat_for_a_seed():
    draws = []
    for _ in range(2):
        weighting = build_weighting("rlw", 5, generator=torch.Generator().manual_seed(7))
        draws.append(torch.stack([weighting.total_loss(torch.ones(5))[1] for _ in range(3)]))
    torch.testing.assert_close(draws[0], draws[1])
    torch.testing.assert_close(draws[0].sum(1), torch.full((3,), 5.0))
    assert not torch.allclose(draws[0][0], draws[0][1])


def test_dwa_uses_loss_ratio_of_the_last_two_epochs():
    weighting = build_weighting("dwa", 2)
    torch.testing.assert_close(weighting.total_loss(torch.ones(2))[1], torch.ones(2))
    weighting.end_epoch(torch.tensor([1.0, 1.0]))
    weighting.end_epoch(torch.tensor([0.5, 1.0]))  # r = (0.5, 1)
    expected = 2 * torch.softmax(torch.tensor([0.5, 1.0]) / 2, 0)
    torch.testing.assert_close(weighting.total_loss(torch.ones(2))[1], expected)


def test_gradnorm_shrinks_the_weight_of_the_larger_gradient():
    weighting = build_weighting("gradnorm", 2)
    grads = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    weighting.weights_from_gram(grads @ grads.T, LOSSES)
    assert weighting.logits.grad[0] > 0 > weighting.logits.grad[1]  # gradient descent lowers w_0


def test_unknown_weighting_and_grad_space_are_config_errors():
    with pytest.raises(ConfigError, match="nash"):
        build_weighting("nash", 2)
    with pytest.raises(ConfigError, match="grad-space"):
        build_weighting("mgda", 2, grad_space="pixels")


TASKS = (TaskSpec("a", "binary", 2), TaskSpec("b", "multiclass", 3), TaskSpec("c", "regression", 1))


def _tiny_problem():
    torch.manual_seed(0)
    model = build_model(TASKS, "small_cnn", image_size=8)
    images = torch.rand(6, 3, 8, 8)
    labels = {"a": torch.tensor([0, 1, 1, 0, 1, 0]), "b": torch.tensor([0, 1, 2, 2, 1, 0]), "c": torch.rand(6)}
    return model, images, labels


def _grads(model, params):
    return torch.cat([p.grad.reshape(-1) for p in params])


@pytest.mark.parametrize("grad_space", ["shared", "representation"])
@pytest.mark.parametrize("name", GRADIENT_BASED)
def test_backward_sets_weighted_shared_and_plain_head_gradients(name, grad_space):
    """After backward: shared grads = grad of sum_k alpha_k L_k; head grads = grad of sum_k L_k, or of
    sum_k alpha_k L_k for a weighting whose reference back-propagates the weighted sum (FairGrad)."""
    model, images, labels = _tiny_problem()
    weighting = build_weighting(name, 3, grad_space=grad_space)
    rep = model.features(images)
    losses = task_losses(TASKS, model.heads_forward(rep), labels)
    alpha = weighting.backward(losses, model, rep)
    shared, heads = model.shared_parameters(), model.task_parameters()
    got_shared, got_heads = _grads(model, shared), _grads(model, heads)
    model.zero_grad()
    losses = task_losses(TASKS, model(images), labels)
    expect_shared = torch.cat([g.reshape(-1) for g in torch.autograd.grad((alpha * losses).sum(), shared, retain_graph=True)])
    head_loss = (alpha * losses).sum() if weighting.weights_heads else losses.sum()
    expect_heads = torch.cat([g.reshape(-1) for g in torch.autograd.grad(head_loss, heads)])
    torch.testing.assert_close(got_shared, expect_shared, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_heads, expect_heads)


def test_exact_gradient_methods_agree():
    alphas = []
    for method in ("batched", "loop", "sequential"):
        model, images, labels = _tiny_problem()
        rep = model.features(images)
        losses = task_losses(TASKS, model.heads_forward(rep), labels)
        alphas.append(build_weighting("aligned_mtl", 3, grad_method=method).backward(losses, model, rep))
    torch.testing.assert_close(alphas[0], alphas[1])
    torch.testing.assert_close(alphas[0], alphas[2], atol=1e-5, rtol=1e-4)


def test_fairgrad_weights_its_task_heads_as_its_reference_does():
    """FairGrad's reference back-propagates sum_k w_k L_k through every parameter, heads included."""
    model, images, labels = _tiny_problem()
    weighting = build_weighting("fairgrad", 3)
    rep = model.features(images)
    losses = task_losses(TASKS, model.heads_forward(rep), labels)
    alpha = weighting.backward(losses, model, rep)
    assert weighting.weights_heads and not torch.allclose(alpha, torch.ones(3))
    head = model.heads[2]  # task c
    got = torch.cat([p.grad.reshape(-1) for p in head.parameters()])
    model.zero_grad()
    loss_c = task_losses(TASKS, model(images), labels)[2]
    plain = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_c, list(head.parameters()))])
    torch.testing.assert_close(got, alpha[2] * plain, atol=1e-6, rtol=1e-4)
