"""Per-sample UE baselines em/tap/sep built on mtlue's PGD: budget, direction of the loss change, resume."""

import numpy as np
import pytest
import torch

from mtlue.data import open_source
from mtlue.protect import protect_config
from mtlue.protect.config import SurrogateConfig
from mtlue.protect.driver import protect_source
from mtlue.protect.objectives import per_sample_base_loss
from mtlue.protect.samplewise import CheckpointEnsemble

CPU = torch.device("cpu")
SPEC = "shapes:n=48,size=16,seed=3"



@pytest.fixture(scope="module")
def source():
    return open_source(SPEC)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, source):
    """Two 'checkpoints' of a surrogate briefly trained on the clean train split."""
    from mtlue.models.losses import task_losses
    from mtlue.models.mtl import build_model, save_checkpoint
    from mtlue.data.base import batch_tensors

    folder = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    model = build_model(source.tasks, "small_cnn", 3, 16)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = next(source.batches("train", 64))
    images, labels, masks = batch_tensors(batch, CPU)
    for epoch in (1, 2):
        for _ in range(15):
            loss = task_losses(source.tasks, model(images), labels, masks).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        save_checkpoint(model, folder / f"epoch_{epoch}.pt", {"epoch": epoch})
    return folder


def config(method, **changes):
    base = dict(method=method, epochs=2, batch_size=16, seed=1, steps=4, step_size=2.0,
                surrogate=SurrogateConfig(backbone="small_cnn"), surrogate_steps=2)
    return protect_config({**base, **changes}, explicit=changes)  # base keys the method does not read: dropped


def stored_train(store):
    import h5py

    images = []
    for shard in sorted((store / "train").glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            images.append(f["images"][:])
    return np.concatenate(images)


def base_loss_sum(model, source, images_uint8, base):
    """Σ over samples of the loss the base minimises (TAP: CE toward the shifted class, −BCE for binary)."""
    from mtlue.data.base import batch_tensors

    batch = next(source.batches("train", len(images_uint8)))
    batch.images = images_uint8
    images, labels, masks = batch_tensors(batch, CPU)
    with torch.no_grad():
        return float(per_sample_base_loss(base, source.tasks, model(images), labels, masks).sum())


@pytest.mark.parametrize("objective", ("total", "dgba"))
def test_tap_stays_in_budget_and_lowers_its_targeted_loss_on_the_surrogate(tmp_path, source, checkpoints, objective):
    from mtlue.models.mtl import load_checkpoint

    manifest = protect_source(source, tmp_path / "T", config("tap", objective=objective,
                                                               surrogate_path=str(checkpoints / "epoch_2.pt")),
                              CPU, progress=False)
    stored = stored_train(tmp_path / "T")
    clean = np.concatenate([b.images for b in source.batches("train", 1024)])
    assert np.abs(stored.astype(int) - clean.astype(int)).max() <= 8
    assert (stored != clean).mean() > 0.5
    surrogate = load_checkpoint(str(checkpoints / "epoch_2.pt"), CPU)[0].eval()
    assert base_loss_sum(surrogate, source, stored, "tap") < base_loss_sum(surrogate, source, clean, "tap")
    assert manifest["protection"]["method"] == "tap"


def test_sep_uses_every_checkpoint_and_stays_in_budget(tmp_path, source, checkpoints):
    manifest = protect_source(source, tmp_path / "S", config("sep", surrogate_path=str(checkpoints)), CPU, progress=False)
    stored = stored_train(tmp_path / "S")
    clean = np.concatenate([b.images for b in source.batches("train", 1024)])
    assert np.abs(stored.astype(int) - clean.astype(int)).max() <= 8
    assert manifest["protection"]["surrogate"]["ensemble_size"] == 2


def test_checkpoint_ensemble_total_is_the_sum_over_members(source):
    from mtlue.attacks.objectives import clean_labels, objective_direction, parse_objective
    from mtlue.models.mtl import build_model

    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model(source.tasks, "small_cnn", 3, 16).eval())
    ensemble = CheckpointEnsemble(members, source.tasks)
    batch = next(source.batches("train", 8))
    from mtlue.data.base import batch_tensors

    images, labels, masks = batch_tensors(batch, CPU)
    total = 0
    for member in members:
        safe, bool_masks = clean_labels(member.tasks, labels, masks, CPU)
        total = total + objective_direction(member, images, safe, bool_masks, parse_objective("total", member.tasks))[0]
    safe, bool_masks = clean_labels(ensemble.tasks, ensemble.replicate(labels), ensemble.replicate(masks), CPU)
    joint, _ = objective_direction(ensemble, images, safe, bool_masks, parse_objective("total", ensemble.tasks))
    assert torch.allclose(joint, total, atol=1e-6)


def test_em_lowers_the_poisoned_train_loss_and_resumes_after_a_kill(tmp_path, source):
    class Killed(Exception):
        pass

    def kill_after_first_round(iteration):
        if iteration == 0:
            raise Killed

    work = tmp_path / "work"
    with pytest.raises(Killed):
        protect_source(source, tmp_path / "E", config("em"), CPU, work_dir=work, progress=False,
                       on_iteration=kill_after_first_round)
    assert (work / "em" / "state.pt").is_file()
    resumed = protect_source(source, tmp_path / "E", config("em"), CPU, work_dir=work, progress=False)
    fresh = protect_source(source, tmp_path / "F", config("em"), CPU, work_dir=tmp_path / "work2", progress=False)
    assert resumed["protection"]["rounds"] == fresh["protection"]["rounds"] == 2
    assert np.array_equal(stored_train(tmp_path / "E"), stored_train(tmp_path / "F"))
    clean = np.concatenate([b.images for b in source.batches("train", 1024)])
    assert np.abs(stored_train(tmp_path / "E").astype(int) - clean.astype(int)).max() <= 8


def test_unset_steps_and_norm_follow_the_published_defaults(tmp_path, source, checkpoints):
    """`mtlue protect --method tap` without --steps runs TAP's published 250 steps; lsp/ar default to L2."""
    from mtlue.errors import ConfigError

    manifest = protect_source(source, tmp_path / "T", config("tap", steps=None, surrogate_path=str(checkpoints / "epoch_2.pt")),
                              CPU, progress=False)
    assert manifest["protection"]["steps"] == 250
    assert manifest["protection"]["norm"] == "linf"
    assert protect_config({"method": "lsp"}).settings.pattern_norm == "l2"
    assert protect_config({"method": "ar", "norm": "linf"}).settings.pattern_norm == "linf"
    with pytest.raises(ConfigError, match="--norm applies to --method lsp, ar"):
        protect_config({"method": "em", "norm": "l2"})


@pytest.mark.parametrize("base, expected", [
    # (target, descend) for a 10-class task with y = 3, a binary task with y = 1, a regression task with y = 0.5
    ("em", {"digit": (3, True), "smile": (1, True), "age": (0.5, True)}),
    ("tap", {"digit": (8, True), "smile": (1, False), "age": (0.5, False)}),
    ("sep", {"digit": (8, True), "smile": (0, True), "age": (0.5, False)}),
])
def test_base_targets_follow_the_published_rules(base, expected):
    """EM keeps labels; TAP/SEP shift a C-class label to (y + ⌊C/2⌋) mod C; SEP flips bits; the rest is ascended."""
    from mtlue.data.base import TaskSpec
    from mtlue.protect.objectives import base_targets

    tasks = (TaskSpec("digit", "multiclass", 10), TaskSpec("smile", "binary", 2), TaskSpec("age", "regression", 1))
    labels = {"digit": torch.tensor([3]), "smile": torch.tensor([1]), "age": torch.tensor([0.5])}
    targets, descend = base_targets(base, tasks, labels)
    assert {name: (targets[name].item(), descend[name]) for name in targets} == expected
