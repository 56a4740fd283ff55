"""Task-level embedding regularisers of MTL-UE (Yu et al., ICML 2025, §3.3), on flattened embeddings.

intra (ER):  (1/K) Σ_k [ mean_{m≠n} cos(e^k_m, e^k_n) + 1 ]      (0 … 2; 2 when a task's classes coincide)
inter (CER): mean over all pairs (m of task k, n of task l, k<l) of |cos(e^k_m, e^l_n)|   (0 when K = 1)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit_rows(weight: torch.Tensor) -> torch.Tensor:
    return F.normalize(weight.reshape(weight.shape[0], -1), dim=1, eps=1e-12)


def intra_task_loss(tables: dict) -> torch.Tensor:
    """Mean over tasks of the mean off-diagonal cosine between a task's class embeddings, plus 1."""
    terms = []
    for weight in tables.values():
        classes = weight.shape[0]
        if classes < 2:
            continue
        unit = _unit_rows(weight)
        cosine = unit @ unit.t()
        off_diagonal = cosine.sum() - cosine.diagonal().sum()
        terms.append(off_diagonal / (classes * (classes - 1)) + 1.0)
    if not terms:
        return _zero(tables)
    return torch.stack(terms).mean()


def inter_task_loss(tables: dict) -> torch.Tensor:
    """Global mean |cos| over every pair of classes drawn from two different tasks."""
    units = [_unit_rows(w) for w in tables.values()]
    if len(units) < 2:
        return _zero(tables)
    total, count = 0.0, 0
    for k in range(len(units)):
        for l in range(k + 1, len(units)):
            cosine = (units[k] @ units[l].t()).abs()
            total = total + cosine.sum()
            count += cosine.numel()
    return total / count


def embedding_regulariser(tables: dict, lambda_intra: float, lambda_inter: float) -> torch.Tensor:
    """λ_intra·L_intra + λ_inter·L_inter."""
    loss = _zero(tables)
    if lambda_intra:
        loss = loss + lambda_intra * intra_task_loss(tables)
    if lambda_inter:
        loss = loss + lambda_inter * inter_task_loss(tables)
    return loss


def _zero(tables: dict) -> torch.Tensor:
    for weight in tables.values():
        return weight.new_zeros(())
    return torch.zeros(())
