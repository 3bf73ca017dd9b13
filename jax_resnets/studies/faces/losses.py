"""Face losses: softmax CE (label smoothing), ArcFace, CosFace, center loss, batch-hard triplet.

* ArcFace (Deng et al. 2019): target logit s * cos(theta + m) (s=64, m=0.5), with the
  insightface fallback cos(theta) - m sin(m) once theta + m > pi keeps it monotonic.
* CosFace (Wang et al. 2018): target logit s * (cos(theta) - m) (s=64, m=0.35).
  Both take the cosine logits of `FaceNet(head="cosine")` and end in `steps.cross_entropy`.
* Center loss (Wen et al. 2016): lambda/2 * mean ||x_i - c_{y_i}||^2; the centers are
  non-trainable state updated by c_j -= alpha * sum_{y_i=j}(c_j - x_i) / (1 + n_j).
* Batch-hard triplet (Hermans et al. 2017) on L2-normalised embeddings, margin 0.2.
`total_loss` combines them as `config.loss` says.
"""
import jax
import jax.numpy as jnp
import ml_collections

from jax_resnets.training import steps

CLASSIFIERS = ("softmax", "arcface", "cosface", "none")


def arcface_logits(cosine: jax.Array, labels: jax.Array, s: float = 64.0, m: float = 0.5) -> jax.Array:
  """s * cos(theta + m) for the target class, s * cos(theta) for the others."""
  cosine = jnp.clip(cosine, -1.0, 1.0)
  sine = jnp.sqrt(jnp.clip(1.0 - cosine**2, 0.0, 1.0))
  phi = cosine * jnp.cos(m) - sine * jnp.sin(m)
  phi = jnp.where(cosine > jnp.cos(jnp.pi - m), phi, cosine - jnp.sin(jnp.pi - m) * m)
  target = jax.nn.one_hot(labels, cosine.shape[-1], dtype=bool)
  return s * jnp.where(target, phi, cosine)


def cosface_logits(cosine: jax.Array, labels: jax.Array, s: float = 64.0, m: float = 0.35) -> jax.Array:
  """s * (cos(theta) - m) for the target class, s * cos(theta) for the others."""
  return s * (cosine - m * jax.nn.one_hot(labels, cosine.shape[-1]))


def center_loss(features: jax.Array, labels: jax.Array, centers: jax.Array) -> jax.Array:
  """1/2 * mean_i ||x_i - c_{y_i}||^2 (centers get no gradient)."""
  diff = features - jax.lax.stop_gradient(centers)[labels]
  return 0.5 * jnp.mean(jnp.sum(diff**2, axis=-1))


def center_update_terms(features: jax.Array, labels: jax.Array, centers: jax.Array):
  """(sum_{y_i=j}(c_j - x_i), n_j) per class: sums, so devices can psum them before the update."""
  onehot = jax.nn.one_hot(labels, centers.shape[0], dtype=features.dtype)  # [B, K]
  counts = onehot.sum(0)
  diff_sum = counts[:, None] * centers - onehot.T @ jax.lax.stop_gradient(features)
  return diff_sum, counts


def update_centers(centers: jax.Array, diff_sum: jax.Array, counts: jax.Array, alpha: float) -> jax.Array:
  """c_j <- c_j - alpha * diff_sum_j / (1 + n_j) (Wen et al. 2016, eq. 4)."""
  return centers - alpha * diff_sum / (1.0 + counts[:, None])


def pairwise_distances(x: jax.Array) -> jax.Array:
  """Euclidean distances between rows (sqrt clipped away from 0 for a finite gradient)."""
  sq = jnp.sum(x * x, -1)
  d2 = sq[:, None] - 2.0 * x @ x.T + sq[None, :]
  return jnp.sqrt(jnp.maximum(d2, 1e-12))


def batch_hard_triplet_loss(embeddings: jax.Array, labels: jax.Array, margin: float = 0.2,
                            mask: jax.Array | None = None) -> jax.Array:
  """mean over anchors with a positive and a negative of [max d(a,p) - min d(a,n) + margin]_+.

  Embeddings are L2-normalised first. `mask` (1 real, 0 padding) drops rows entirely.
  """
  x = embeddings / jnp.linalg.norm(embeddings, axis=-1, keepdims=True).clip(1e-12)
  d = pairwise_distances(x)
  valid = jnp.ones(labels.shape, bool) if mask is None else mask > 0
  same = (labels[:, None] == labels[None, :]) & valid[:, None] & valid[None, :]
  positive = same & ~jnp.eye(len(labels), dtype=bool)
  negative = ~same & valid[:, None] & valid[None, :]
  hardest_pos = jnp.max(jnp.where(positive, d, -jnp.inf), axis=1)
  hardest_neg = jnp.min(jnp.where(negative, d, jnp.inf), axis=1)
  usable = positive.any(1) & negative.any(1)
  losses = jnp.where(usable, jax.nn.relu(hardest_pos - hardest_neg + margin), 0.0)
  return jnp.sum(losses) / jnp.maximum(jnp.sum(usable), 1)


def classifier_logits(cfg: ml_collections.ConfigDict, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The logits the cross-entropy sees: plain, ArcFace- or CosFace-margined cosines."""
  if cfg.classifier == "arcface":
    return arcface_logits(logits, labels, cfg.scale, cfg.arcface_margin)
  if cfg.classifier == "cosface":
    return cosface_logits(logits, labels, cfg.scale, cfg.cosface_margin)
  return logits


def total_loss(cfg: ml_collections.ConfigDict, logits: jax.Array, embedding: jax.Array, labels: jax.Array,
               centers: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """classifier CE (+ center_weight * center) (+ triplet_weight * triplet); returns (loss, parts)."""
  parts = {}
  if cfg.classifier != "none":
    parts["ce"] = steps.cross_entropy(classifier_logits(cfg, logits, labels), labels, cfg.label_smoothing).mean()
  if cfg.center_weight:
    parts["center"] = cfg.center_weight * center_loss(embedding, labels, centers)
  if cfg.triplet_weight:
    parts["triplet"] = cfg.triplet_weight * batch_hard_triplet_loss(embedding, labels, cfg.triplet_margin)
  return sum(parts.values()), parts


def default_config() -> ml_collections.ConfigDict:
  """`config.loss` of the faces study."""
  return ml_collections.ConfigDict(dict(
      classifier="softmax", label_smoothing=0.0, scale=64.0, arcface_margin=0.5, cosface_margin=0.35,
      center_weight=0.0, center_alpha=0.5, triplet_weight=0.0, triplet_margin=0.2))
