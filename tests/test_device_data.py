"""The pipeline on the device (dataset.on_device): the per-sample pipeline's samples, order, policy and
normalisation, batched; crops and flips reproducible from (seed, epoch), resumable, sharded."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import QUIET, REPO, compose_config
from torch.utils.data import TensorDataset
from torchvision import datasets as tvd
from torchvision.transforms.v2 import functional as TF

from acs.data import DeviceBatches, build_datasets, build_loaders, dataset_info
from acs.data.loaders import _fits, _sampler
from acs.data.on_device import HeldSplit, draw_crop_flip
from acs.data.registry import get_spec
from acs.data.sources import cifar_tensors, mnist_tensors, svhn_tensors
from acs.data.splits import TransformedSubset
from acs.data.transforms import CROP_FLIP, CropFlip, eval_transform
from acs.training.app import execute
from acs.training.config import ConfigError, validate


def held(name, n=40, seed=0):
    """A random uint8 split of ``name``'s shape whose label is the sample's index, padded for its policy."""
    info = dataset_info(name)
    images = torch.randint(0, 256, (n, *info.input_size), generator=torch.Generator().manual_seed(seed),
                           dtype=torch.uint8)  # fmt: skip
    policy = CROP_FLIP[get_spec(name).augmentation]
    return images, HeldSplit(images, torch.arange(n), info, policy.padding, torch.device("cpu")), policy


def batches(split, policy, seed=0, batch_size=8, num_replicas=1, rank=0, shuffle=True):
    samples = TransformedSubset(TensorDataset(split.targets), range(len(split)))  # the whole held split
    sampler = _sampler(len(samples), shuffle, seed, num_replicas, rank)
    return DeviceBatches(split, samples, sampler, batch_size, policy, seed)


def epoch(loader, number):
    loader.set_epoch(number)
    images, labels = zip(*loader)
    return torch.cat(images), torch.cat(labels)


def per_sample(image, info, padding, top, left, flip):
    """The per-sample pipeline's functional steps for one uint8 image and given crop and flip."""
    h, w = image.shape[-2:]
    out = TF.crop(TF.pad(image, [padding]), top, left, h, w)
    out = TF.horizontal_flip(out) if flip else out
    return TF.normalize(TF.to_dtype(out, torch.float32, scale=True), list(info.mean), list(info.std))


@pytest.mark.parametrize("name", ["cifar10", "svhn", "fashion_mnist"])
def test_each_sample_is_its_own_crop_and_flip_of_the_policy(name):
    images, split, policy = held(name)
    info = dataset_info(name)
    loader = batches(split, policy, seed=3)
    got, labels = epoch(loader, 2)
    assert sorted(labels.tolist()) == list(range(len(images)))  # every sample once, label with its image
    drawn = draw_crop_flip(len(images), policy, seed=3, epoch=2)
    for image, label in zip(got, labels.tolist()):
        top, left, flip = drawn[label].tolist()
        assert torch.equal(image, per_sample(images[label], info, policy.padding, top, left, flip))
    # Offsets and flips drawn per sample, over the policy's whole range.
    assert set(drawn[:, :2].flatten().tolist()) == set(range(2 * policy.padding + 1))
    assert set(drawn[:, 2].tolist()) == ({0, 1} if policy.flip else {0})
    assert len({tuple(row) for row in drawn[:8].tolist()}) > 4


def test_a_crop_is_a_window_of_the_padded_image_and_a_flip_its_mirror():
    images, split, policy = held("cifar10", n=2)
    rows = torch.tensor([0, 1, 1])
    crop_flip = torch.tensor([[0, 8, 0], [4, 4, 0], [4, 4, 1]])  # top-left corner, centre, centre mirrored
    got, labels = split.batch(rows, crop_flip)
    plain = split.normalise(images)
    padded = split.normalise(torch.nn.functional.pad(images, [4] * 4))
    assert torch.equal(got[0], padded[0, :, 0:32, 8:40])
    assert torch.equal(got[0, :, :4], split.normalise(torch.zeros(3, 4, 32, dtype=torch.uint8)))  # the padding
    assert torch.equal(got[1], plain[1]) and torch.equal(got[2], plain[1].flip(-1))
    assert labels.tolist() == [0, 1, 1]


def test_batches_are_reproducible_from_seed_and_epoch():
    _, split, policy = held("cifar10")
    first, second = batches(split, policy, seed=1), batches(split, policy, seed=1)
    a, b = epoch(first, 0), epoch(second, 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(epoch(first, 0)[0], a[0])  # a second pass over the epoch (precise BN) too
    other_epoch, other_seed = epoch(first, 1), epoch(batches(split, policy, seed=2), 0)
    for other in (other_epoch, other_seed):
        assert not torch.equal(other[1], a[1])  # another order
        # and other crops of the same samples
        assert not torch.equal(other[0][other[1].argsort()], a[0][a[1].argsort()])


def test_a_resumed_epoch_equals_the_uninterrupted_one():
    _, split, policy = held("cifar10")
    uninterrupted = batches(split, policy, seed=5)
    for number in range(3):
        last = epoch(uninterrupted, number)
    resumed = epoch(batches(split, policy, seed=5), 2)  # a new process, starting at epoch 2
    assert torch.equal(resumed[0], last[0]) and torch.equal(resumed[1], last[1])


@pytest.mark.parametrize("n", [40, 41])
def test_two_ranks_share_the_epoch_of_one_process(n):
    _, split, policy = held("cifar10", n=n)
    whole = list(zip(*batches(split, policy, seed=4, batch_size=8)))
    ranks = [list(zip(*batches(split, policy, seed=4, batch_size=4, num_replicas=2, rank=r))) for r in (0, 1)]
    labels = [torch.cat(r[1]).tolist() for r in ranks]
    assert len(labels[0]) == len(labels[1]) == (n + 1) // 2
    assert set(labels[0]) | set(labels[1]) == set(range(n))  # they cover the split
    assert len(set(labels[0]) & set(labels[1])) == n % 2  # disjoint, but for DistributedSampler's one repeat
    for k in range(len(whole[0]) - n % 2):  # the k-th global batch is split between the ranks, crops and all
        joined = torch.cat([ranks[0][0][k], ranks[1][0][k]])
        order = torch.cat([ranks[0][1][k], ranks[1][1][k]]).argsort()
        assert torch.equal(joined[order], whole[0][k][whole[1][k].argsort()])


def test_evaluation_batches_are_the_images_in_order_and_sharded():
    images, split, _ = held("cifar10", n=9)
    info = dataset_info("cifar10")
    shards = [batches(split, None, batch_size=4, num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    labels = [torch.cat([y for _, y in shard]).tolist() for shard in shards]
    assert labels == [[0, 2, 4, 6, 8], [1, 3, 5, 7]]
    got = torch.cat([x for x, _ in shards[0]])
    assert torch.equal(got, torch.stack([per_sample(images[i], info, 0, 0, 0, False) for i in labels[0]]))


def in_memory(cls, **arrays):
    """torchvision's ``cls`` with the arrays its reader fills set directly (no files)."""
    raw = cls.__new__(cls)
    raw.transform = raw.target_transform = None
    vars(raw).update(arrays)
    return raw


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist"])
def test_held_splits_are_the_images_torchvision_delivers(name):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5)
    raw, read = {
        "cifar10": (in_memory(tvd.CIFAR10, data=rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
                              targets=labels.tolist()), cifar_tensors),
        "svhn": (in_memory(tvd.SVHN, data=rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8), labels=labels),
                 svhn_tensors),
        "mnist": (in_memory(tvd.MNIST, data=torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8),
                            targets=torch.as_tensor(labels)), mnist_tensors),
    }[name]  # fmt: skip
    spec, info = get_spec(name), dataset_info(name)
    split = HeldSplit(*read(raw), info, 0, torch.device("cpu"))
    got, targets = split.batch(torch.arange(5))
    transform = eval_transform(info, spec.augmentation)
    assert torch.equal(got, torch.stack([transform(raw[i][0]) for i in range(5)]))
    assert targets.tolist() == labels.tolist() == [raw[i][1] for i in range(5)]


def test_build_loaders_on_device_delivers_the_per_sample_pipelines_batches():
    # digits: real data, no augmentation, so both pipelines must agree to the bit, batch by batch.
    options = dict(batch_size=32, val_split=0.1, seed=3, subset=400)
    device, loaders = build_loaders("digits", on_device=True, **options), build_loaders("digits", **options)
    assert isinstance(device.train, DeviceBatches) and not isinstance(loaders.train, DeviceBatches)
    assert [len(device.train.dataset), len(device.val.dataset)] == [len(loaders.train.dataset), 40]
    for loader in (device, loaders):
        loader.set_epoch(1)
    for split in ("train", "val", "test"):
        mine, theirs = list(getattr(device, split)), list(getattr(loaders, split))
        assert len(mine) == len(theirs) == len(getattr(device, split))
        for (x, y), (x_ref, y_ref) in zip(mine, theirs):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_by_default_the_splits_go_on_a_gpu_where_they_take_at_most_a_quarter_of_its_free_memory(monkeypatch):
    sets, spec = build_datasets("digits"), get_spec("digits")
    held = (1438 + 359) * 16 * 16 * 4  # train and test images, float32 (no crop: no padding)
    for free, fits in ((4 * held, True), (4 * held - 4, False)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 2 * free))
        assert _fits(sets, spec, None, torch.device("cuda")) is fits
    cifar = dataclasses.replace(sets, info=dataset_info("cifar10"))  # 3x32x32 uint8, padded by 4 for crops
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * (1438 * 3 * 40 * 40 + 359 * 3 * 32 * 32), 0))
    assert _fits(cifar, get_spec("cifar10"), CROP_FLIP["cifar"], torch.device("cuda"))
    assert not _fits(cifar, get_spec("cifar10"), CropFlip(5, True), torch.device("cuda"))


def test_data_read_sample_by_sample_cannot_go_on_the_device():
    with pytest.raises(ValueError, match="imagenet is read sample by sample.*on_device=false"):
        build_loaders("imagenet", on_device=True)
    cfg = compose_config("dataset=imagenet", "dataset.on_device=true", "trainer=cpu", "logger=none")
    with pytest.raises(ConfigError, match="dataset.on_device=true, but imagenet"):
        validate(cfg)


def test_training_with_the_data_on_the_device(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "dataset.on_device=true", "trainer.max_epochs=1"]
    summary = execute(compose_config(*overrides), str(tmp_path), overrides)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record["train/loss"] > 0 and 0 <= record["test/acc1"] <= 100


@pytest.mark.slow  # torchrun; the two-rank batches are checked without it in the default run
def test_two_processes_on_the_device_train_like_one_per_sample_process(tmp_path, tiny_overrides):
    # Same global batches (the synthetic set has no augmentation) and BatchNorm over the global batch.
    one = [*tiny_overrides, "trainer.max_epochs=1", "trainer.sync_bn=true", "dataset.on_device=false"]
    want = execute(compose_config(*one), str(tmp_path / "one"), one)["final"]
    two = [*one[:-1], "dataset.on_device=true", f"hydra.run.dir={tmp_path / 'two'}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "run.py"]
    result = subprocess.run([*launcher, *two], cwd=REPO, env=QUIET, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads((tmp_path / "two" / "summary.json").read_text())["final"]
    keys = [k for k in want if k != "time_s"]
    assert {k: got[k] for k in keys} == pytest.approx({k: want[k] for k in keys}, rel=1e-4, abs=1e-9)
