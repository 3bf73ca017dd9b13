"""Face losses against numpy references and hand-built embeddings; FaceNet shapes."""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax_resnets.models import registry
from jax_resnets.studies.faces import face_nets
from jax_resnets.studies.faces import losses as face_losses


def numpy_arcface(cosine, labels, s, m):
  """Angular margin by arccos: s*cos(theta+m) on the target (linear fallback past pi - m)."""
  out = s * cosine.copy()
  for i, y in enumerate(labels):
    theta = np.arccos(cosine[i, y])
    out[i, y] = s * (np.cos(theta + m) if theta + m < np.pi else cosine[i, y] - np.sin(np.pi - m) * m)
  return out


def test_arcface_logits_equal_numpy_reference():
  rng = np.random.default_rng(0)
  cosine = rng.uniform(-0.99, 0.99, (16, 7)).astype(np.float32)
  cosine[0, 3] = -0.95  # theta + m > pi: the fallback branch.
  labels = rng.integers(0, 7, 16)
  labels[0] = 3
  got = face_losses.arcface_logits(jnp.asarray(cosine), jnp.asarray(labels), s=64.0, m=0.5)
  np.testing.assert_allclose(np.asarray(got), numpy_arcface(cosine.astype(np.float64), labels, 64.0, 0.5),
                             rtol=1e-5, atol=1e-4)


def test_cosface_logits_equal_numpy_reference():
  rng = np.random.default_rng(1)
  cosine = rng.uniform(-1, 1, (8, 5)).astype(np.float32)
  labels = rng.integers(0, 5, 8)
  expected = 64.0 * cosine
  expected[np.arange(8), labels] = 64.0 * (cosine[np.arange(8), labels] - 0.35)
  got = face_losses.cosface_logits(jnp.asarray(cosine), jnp.asarray(labels), s=64.0, m=0.35)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-5)


def test_margins_make_the_target_harder():
  cosine, labels = jnp.asarray([[0.8, 0.1, -0.2]]), jnp.asarray([0])
  for fn in (face_losses.arcface_logits, face_losses.cosface_logits):
    out = np.asarray(fn(cosine, labels))
    assert out[0, 0] < 64 * 0.8 and np.allclose(out[0, 1:], 64 * np.asarray([0.1, -0.2]))


def test_batch_hard_triplet_on_hand_built_embeddings():
  # Class 0 at (1,0),(0,1); class 1 at (-1,0),(0,-1): every anchor's hardest positive and
  # hardest negative are both sqrt(2) away, so each loss is exactly the margin.
  x = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
  labels = jnp.asarray([0, 0, 1, 1])
  assert float(face_losses.batch_hard_triplet_loss(x, labels, 0.2)) == pytest.approx(0.2, abs=1e-5)
  # Scaling does not matter (L2-normalised); well separated classes give 0.
  assert float(face_losses.batch_hard_triplet_loss(3 * x, labels, 0.2)) == pytest.approx(0.2, abs=1e-5)
  tight = jnp.asarray([[1.0, 0.0], [1.0, 0.05], [-1.0, 0.0], [-1.0, 0.05]])
  assert float(face_losses.batch_hard_triplet_loss(tight, labels, 0.2)) == pytest.approx(0.0, abs=1e-6)


def brute_force_triplet(x, labels, margin):
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  losses = []
  for a in range(len(x)):
    pos = [np.linalg.norm(x[a] - x[p]) for p in range(len(x)) if p != a and labels[p] == labels[a]]
    neg = [np.linalg.norm(x[a] - x[n]) for n in range(len(x)) if labels[n] != labels[a]]
    if pos and neg:
      losses.append(max(0.0, max(pos) - min(neg) + margin))
  return np.mean(losses)


def test_batch_hard_triplet_equals_brute_force():
  rng = np.random.default_rng(2)
  x, labels = rng.normal(size=(12, 6)), np.asarray([0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 5])
  got = face_losses.batch_hard_triplet_loss(jnp.asarray(x, jnp.float32), jnp.asarray(labels), 0.2)
  assert float(got) == pytest.approx(brute_force_triplet(x, labels, 0.2), rel=1e-4)


def test_center_loss_and_update_on_hand_built_embeddings():
  x = jnp.asarray([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
  labels = jnp.asarray([0, 0, 1])
  centers = jnp.asarray([[2.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
  # diffs (-1,0), (1,0), (0,2): 1/2 * mean(1, 1, 4) = 1.
  assert float(face_losses.center_loss(x, labels, centers)) == pytest.approx(1.0)
  grad = jax.grad(face_losses.center_loss)(x, labels, centers)
  np.testing.assert_allclose(grad, (np.asarray(x) - np.asarray(centers)[[0, 0, 1]]) / 3, rtol=1e-6)
  diff_sum, counts = face_losses.center_update_terms(x, labels, centers)
  new = face_losses.update_centers(centers, diff_sum, counts, alpha=0.5)
  # class 0: (2-1)+(2-3) = 0 -> unchanged; class 1: (0,-2)/(1+1) * 0.5 -> (0, 0.5); class 2 unseen.
  np.testing.assert_allclose(new, [[2.0, 0.0], [0.0, 0.5], [5.0, 5.0]], atol=1e-6)


def test_total_loss_combines_parts():
  cfg = face_losses.default_config()
  cfg.update(classifier="cosface", center_weight=0.1, triplet_weight=1.0)
  rng = np.random.default_rng(3)
  emb, labels = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), jnp.asarray([0, 0, 1, 1, 2, 2])
  cos = jnp.asarray(rng.uniform(-1, 1, (6, 3)), jnp.float32)
  loss, parts = face_losses.total_loss(cfg, cos, emb, labels, jnp.zeros((3, 4)))
  assert set(parts) == {"ce", "center", "triplet"}
  assert float(loss) == pytest.approx(sum(float(v) for v in parts.values()), rel=1e-6)
  assert float(parts["center"]) == pytest.approx(0.1 * 0.5 * float(jnp.mean(jnp.sum(emb**2, -1))), rel=1e-5)


@pytest.mark.parametrize("block,depthwise", [("resnet_basic", True), ("resnet_bottleneck", True),
                                             ("convnext", True), ("convnext", False),
                                             ("mobilenetv2", True), ("mobilenetv2", False)])
def test_face_net_shapes(block, depthwise):
  cfg = ml_collections.ConfigDict(dict(
      name="face_net", block=block, channels=(8, 16), depths=(1, 2), strides=(1, 2), dropout=(0.0, 0.2),
      se=(True, False), expansion=2, depthwise=depthwise, transition=True, width=8, embedding_size=12,
      head="cosine", dtype="float32"))
  model = registry.build_model(cfg, num_classes=5)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3))))
  (logits, out), _ = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), train=True, mutable=[
      "batch_stats"], rngs={"dropout": jax.random.key(1)}), variables)
  assert logits.shape == (2, 5) and out["features"].shape == (2, 12)
  kernels = [p for p in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
             if "dwconv" in jax.tree_util.keystr(p[0]) and "kernel" in jax.tree_util.keystr(p[0])]
  assert all((leaf.shape[2] == 1) == depthwise for _, leaf in kernels)
  assert bool(kernels) == (not block.startswith("resnet"))


def test_kaiming_normal_init_of_conv_and_dense():
  dense = face_nets.dense_init(jax.random.key(0), (64, 512))  # fan_in 64: std sqrt(2/64).
  conv = face_nets.conv_init(jax.random.key(1), (3, 3, 16, 64))  # fan_out 9*64: std sqrt(2/576).
  assert np.std(dense) == pytest.approx(np.sqrt(2 / 64), rel=0.05)
  assert np.std(conv) == pytest.approx(np.sqrt(2 / 576), rel=0.05)


def test_cosine_head_returns_cosines():
  model = face_nets.FaceNet(channels=(4,), depths=(1,), strides=(1,), width=4, embedding_size=8, num_classes=10,
                            head="cosine")
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  logits, out = jax.jit(model.apply)(variables, jax.random.normal(jax.random.key(1), (3, 8, 8, 3)))
  w = np.asarray(variables["params"]["fc"])
  expected = face_nets.l2_normalize(out["features"]) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(np.asarray(logits)) <= 1.0 + 1e-5)


def test_face_net_rejects_mismatched_stage_lists():
  cfg = ml_collections.ConfigDict(dict(name="face_net", channels=(8, 16), depths=(1,), width=8, dtype="float32"))
  with pytest.raises(ValueError, match="model.depths"):
    face_nets.from_config(cfg, 3)


def test_all_stage_combinations_are_distinct_models():
  counts = set()
  for se, transition in itertools.product((False, True), repeat=2):
    m = face_nets.FaceNet(channels=(8, 16), depths=(1, 1), strides=(1, 2), se=(se, se), transition=transition,
                          width=8, embedding_size=4)
    v = jax.eval_shape(lambda m=m: m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    counts.add(registry.parameter_count(v["params"]))
  assert len(counts) == 4
