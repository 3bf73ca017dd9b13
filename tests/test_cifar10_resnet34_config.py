"""configs/cifar10_resnet34.py: the study's recipe, the strong recipe, the transfer grid, smoke variants."""
import importlib.util
import os

import numpy as np
import pytest

from jax_resnets import config_lib
from jax_resnets.data import pipeline
from jax_resnets.training import optim

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "cifar10_resnet34.py")


def get_config(arg=None):
  config = load_module().get_config(arg)
  config_lib.validate(config)
  return config


def test_synthetic_is_unchanged():
  config = get_config("synthetic")
  assert (config.model.depth, config.model.width, config.batch_size, config.num_epochs) == (34, 16, 64, 2)
  assert config.optim.schedule == "cosine" and "decay_epochs" not in config.optim
  assert config.dataset.synthetic and config.dataset.synthetic_sizes == {"train": 2048, "test": 512}


def test_study_recipe_drops_the_learning_rate_at_epoch_30():
  config = get_config("study")
  assert (config.model.depth, config.model.stem, config.num_epochs) == (34, "cifar", 60)
  assert config.optim.name == "sgd" and config.optim.momentum == 0.9
  assert tuple(config.dataset.augment) == ("crop", "flip") and not config.dataset.synthetic
  steps_per_epoch = 50000 // config.batch_size
  schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch, 60 * steps_per_epoch)
  lr = lambda epoch: float(schedule(int(epoch * steps_per_epoch)))
  assert lr(0) == lr(29.9) == pytest.approx(0.1)
  assert lr(30) == lr(59.9) == pytest.approx(0.01)


def test_strong_recipe():
  config = get_config("strong")
  assert config.num_epochs == 200 and config.label_smoothing == 0.1 and config.optim.schedule == "cosine"
  mix = pipeline.mix_batch(config.dataset)
  assert mix is not None and mix.mixup_alpha > 0 and mix.cutmix_alpha > 0


def test_smoke_variants_shrink_the_schedule_and_mix_labels():
  study = get_config("study,synthetic")
  assert study.num_epochs == 2 and tuple(study.optim.decay_epochs) == (1.0,) and study.dataset.synthetic
  strong = get_config("strong,synthetic")
  assert strong.optim.warmup_epochs == pytest.approx(5 * 2 / 200)
  strong.dataset.synthetic_sizes = {"train": 64, "test": 16}
  labels = next(iter(pipeline.train_iterator(strong.dataset, 16, seed=0)))["label"]
  assert labels.shape == (16, 10)
  np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)


def test_unknown_argument():
  with pytest.raises(ValueError, match="unknown argument 'fast'"):
    get_config("fast")


def load_module():
  spec = importlib.util.spec_from_file_location("cifar10_resnet34", PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_transfer_starts_from_imagenet_weights_with_their_stem():
  config = load_module().get_config("transfer")
  assert (config.model.depth, config.model.stem, config.dataset.image_size) == (34, "imagenet", 224)
  assert config.init.checkpoint == "resnet34-b627a593.pth" and config.freeze == "head_only"
  assert config.model.conv == "default" and not config.dataset.synthetic


def test_transfer_grid_cells_are_feature_extraction_and_fine_tuning():
  module = load_module()
  grid = module.get_grid("transfer")
  assert {n: c["freeze"] for n, c in grid.items()} == {"feature_extraction": "head_only", "fine_tuning": "full"}
  assert {c["init.checkpoint"] for c in grid.values()} == {"resnet34-b627a593.pth"}
  assert grid["fine_tuning"]["optim.learning_rate"] < grid["feature_extraction"]["optim.learning_rate"]
  smoke = module.get_grid("transfer,synthetic")
  assert all(c["init.checkpoint"].startswith("{root}") for c in smoke.values())
  with pytest.raises(ValueError, match="only :transfer"):
    module.get_grid("synthetic")


def test_transfer_without_the_weights_file_names_it(monkeypatch, tmp_path):
  monkeypatch.setenv("JAX_RESNETS_WEIGHTS", str(tmp_path))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="resnet34-b627a593.pth"):
    config_lib.validate(load_module().get_config("transfer"))
