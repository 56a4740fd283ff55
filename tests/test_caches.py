"""Caches in a protect work directory are reused only when every input that made them matches.

Each test protects once into a work directory, changes one input, protects again into the same
work directory, and compares with a fresh run that never saw the first: a stale cache would make
the second run ship the first run's perturbation.
"""

import json

import torch

from mtlue.data import open_source
from mtlue.protect import protect_config
from mtlue.protect.config import SurrogateConfig
from mtlue.protect.driver import protect_source

CPU = torch.device("cpu")
SPEC = "shapes:n=48,size=16,seed=3"


def config(**changes):
    base = dict(method="mtlue", base="em", epochs=2, batch_size=16, generator_width=8, seed=1,
                surrogate=SurrogateConfig(backbone="small_cnn", epochs=1), samples_per_epoch=32)
    return protect_config({**base, **changes}, explicit=changes)  # base keys the method does not read: dropped


def shard_hashes(manifest):
    return [s["sha256"] for s in manifest["splits"]["train"]["shards"]]


def protect(tmp_path, name, cfg, work, spec=SPEC):
    return protect_source(open_source(spec), tmp_path / name, cfg, CPU, work_dir=tmp_path / work, progress=False)


def assert_same_release(first, second):
    assert shard_hashes(first) == shard_hashes(second)


def test_generator_trained_on_other_data_is_not_reused(tmp_path):
    protect(tmp_path, "a", config(), "work")
    other = "shapes:n=48,size=16,seed=9"
    reused = protect(tmp_path, "b", config(), "work", spec=other)
    fresh = protect(tmp_path, "c", config(), "fresh", spec=other)
    assert reused["protection"]["generator_sha256"] == fresh["protection"]["generator_sha256"]
    assert_same_release(reused, fresh)


def test_more_generator_epochs_follow_their_own_lr_schedule(tmp_path):
    protect(tmp_path, "a", config(epochs=2), "work")
    longer = protect(tmp_path, "b", config(epochs=4), "work")
    fresh = protect(tmp_path, "c", config(epochs=4), "fresh")
    assert longer["protection"]["generator_sha256"] == fresh["protection"]["generator_sha256"]


def test_surrogate_cache_is_retrained_when_its_settings_change(tmp_path):
    tap = dict(base="tap", epochs=1)
    protect(tmp_path, "a", config(**tap), "work")
    info_path = tmp_path / "work" / "surrogate" / "surrogate.json"
    assert json.loads(info_path.read_text())["epochs"] == 1
    changed = config(**tap, surrogate=SurrogateConfig(backbone="small_cnn", epochs=2))
    second = protect(tmp_path, "b", changed, "work")
    assert json.loads(info_path.read_text())["epochs"] == 2
    fresh = protect(tmp_path, "c", changed, "fresh")
    assert second["protection"]["surrogate"]["sha256"] == fresh["protection"]["surrogate"]["sha256"]
    assert "key" not in second["protection"]["surrogate"]  # the cache key stays in the work dir
    assert_same_release(second, fresh)


def test_em_state_of_another_objective_is_not_shipped(tmp_path):
    em = dict(method="em", epochs=1)
    first = protect(tmp_path, "a", config(**em), "work")
    dgba = protect(tmp_path, "b", config(**em, objective="dgba"), "work")
    fresh = protect(tmp_path, "c", config(**em, objective="dgba"), "fresh")
    assert_same_release(dgba, fresh)
    assert shard_hashes(first) != shard_hashes(dgba)


def test_the_release_records_the_data_it_was_made_from(tmp_path):
    manifest = protect(tmp_path, "a", config(method="lsp"), "work")
    source = open_source(SPEC)
    assert manifest["source"]["spec"] == SPEC and manifest["source"]["content"] == source.content_digest()
    assert open_source(str(tmp_path / "a")).origin_content() == source.content_digest()
