"""Contrastive representation distillation (CRD; Tian et al., ICLR 2020).

CRD's pure parts, as RepDistiller's `crd/` (the embedding heads trained with
the student are `methods/crd_heads.py`):
  - the memory bank of every training example, as explicit state
    (`crd_memory_init`; it lives in `TrainState.term_state`, never optimised);
  - the negative sampler (`crd_sample_contrast`);
  - the loss, which also returns the updated memory bank (`crd_loss`), and
    its two parts: the normalised contrast scores (`crd_contrast_scores`)
    and the new memory rows (`crd_memory_rows`).
The `CRD` term (`methods/baseline_terms.py`) reads the settings of
`config.crd` and wires these into the training objective. The published recipe:
docs/method.md, section "Baselines". Losses are computed in float32 (float64
stays float64).
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks
CRD_EPS = 1e-7  # RepDistiller crd/criterion.py `eps`.


def crd_embed_normalize(x_ND: jax.Array) -> jax.Array:
  """L2 normalisation of CRD's `Embed` head (RepDistiller `Normalize(2)`).

  `x / sqrt(sum_d x^2)` per row, exactly as the original (no epsilon: an
  all-zero row gives NaN there too). The linear embedding before it (to 128
  dimensions as published) is in `CRDHeads`.

  Args:
    x_ND: embeddings, shape (N, D).

  Returns:
    Unit-norm rows, shape (N, D), float32 (float64 stays float64).
  """
  if jnp.ndim(x_ND) != 2:
    raise ValueError(f'x must have shape (N, D); got {jnp.shape(x_ND)}.')
  x_ND = checks.as_float(x_ND)
  return x_ND / jnp.sqrt(jnp.sum(jnp.square(x_ND), axis=-1, keepdims=True))


def crd_memory_init(rng: jax.Array, num_data: int, dim: int
                   ) -> dict[str, jax.Array]:
  """Initial CRD memory bank (RepDistiller `ContrastMemory.__init__`).

  Both banks are uniform in [-stdv, stdv) with stdv = 1 / sqrt(dim / 3)
  (independent draws). The normalisation constants Z start unset (-1, as the
  original's params buffer); `crd_loss` sets each from the first batch it
  sees and keeps it fixed afterwards. Published: dim = 128 (feat_dim),
  num_data = the training-set size.

  Args:
    rng: a jax PRNG key.
    num_data: number of training examples (memory rows).
    dim: embedding dimension.

  Returns:
    dict(memory_s=(num_data, dim) float32 bank of student embeddings
    (`memory_v1`), memory_t=(num_data, dim) bank of teacher embeddings
    (`memory_v2`), z_s=scalar Z of the student-anchored scores (`Z_v1`),
    z_t=scalar Z of the teacher-anchored scores (`Z_v2`)); Z <= 0 = not set.
  """
  if num_data < 1 or dim < 1:
    raise ValueError(
        f'num_data and dim must be positive; got {num_data} and {dim}.')
  stdv = 1. / (dim / 3.)**0.5
  rng_s, rng_t = jax.random.split(rng)
  shape = (num_data, dim)
  return {
      'memory_s': jax.random.uniform(rng_s, shape, jnp.float32, -stdv, stdv),
      'memory_t': jax.random.uniform(rng_t, shape, jnp.float32, -stdv, stdv),
      'z_s': jnp.array(-1., jnp.float32),
      'z_t': jnp.array(-1., jnp.float32),
  }


def _contrast_loss(x_NK1: jax.Array, num_data: int) -> jax.Array:
  """RepDistiller `ContrastLoss` (Eq. 18): NCE loss, scalar.

  Args:
    x_NK1: normalised scores, column 0 the positive, shape (N, K+1).
    num_data: dataset size; the noise distribution is Pn = 1 / num_data.
  """
  n, k1 = jnp.shape(x_NK1)
  m_pn = (k1 - 1) * (1. / num_data)
  p_pos_N = x_NK1[:, 0]
  p_neg_NK = x_NK1[:, 1:]
  log_d1_N = jnp.log(p_pos_N / (p_pos_N + (m_pn + CRD_EPS)))
  log_d0_NK = jnp.log(m_pn / (p_neg_NK + (m_pn + CRD_EPS)))
  return -(jnp.sum(log_d1_N) + jnp.sum(log_d0_NK)) / n


def crd_contrast_scores(memory_MD: jax.Array, emb_ND: jax.Array,
                        contrast_idx_NK1: jax.Array, z: jax.Array,
                        temperature: float) -> tuple[jax.Array, jax.Array]:
  """One side of RepDistiller `ContrastMemory.forward`: normalised scores.

  out = exp(memory[contrast_idx] @ emb / T) / Z, where an unset Z (<= 0) is
  set to `mean(out before dividing) * num_data` from this batch. No gradient
  flows through Z. `crd_loss` scores the student embeddings against the
  teacher memory (`out_v1`) and the teacher's against the student memory
  (`out_v2`).

  Args:
    memory_MD: the memory bank to contrast against, shape (num_data, D).
    emb_ND: the anchor embeddings, shape (N, D).
    contrast_idx_NK1: memory rows to score, shape (N, K+1), column 0 the
      positive.
    z: the normalisation constant, a scalar; <= 0 = not set yet.
    temperature: T.

  Returns:
    (out_NK1, z): the normalised scores, shape (N, K+1), and the Z used
    (the given one when set, else this batch's estimate).
  """
  num_data = jnp.shape(memory_MD)[0]
  # Every anchor against the whole bank, then the K+1 scores picked out:
  # the same dot products as memory[contrast_idx] @ emb, without gathering
  # N (K+1) rows of D (at N=128, K=16384, D=128: 1 GB per side, 8x the time
  # on the CPU; benchmarks/README.md, "CRD on the CPU").
  scores_NM = emb_ND @ memory_MD.T
  out_NK1 = jnp.exp(jnp.take_along_axis(scores_NM, contrast_idx_NK1, axis=1)
                    / temperature)
  z = jax.lax.stop_gradient(z)
  z_new = jnp.where(
      z > 0, z, jax.lax.stop_gradient(jnp.mean(out_NK1) * num_data))
  return out_NK1 / z_new, z_new


def crd_memory_rows(memory_MD: jax.Array, emb_ND: jax.Array,
                    idx_N: jax.Array, momentum: float) -> jax.Array:
  """The new memory rows idx of RepDistiller `ContrastMemory.forward`.

  normalize(memory[idx] * momentum + emb * (1 - momentum)), row-wise L2,
  with no gradient into emb.

  Args:
    memory_MD: the memory bank, shape (num_data, D).
    emb_ND: this batch's embeddings for that bank, shape (N, D).
    idx_N: dataset indices of the batch examples, shape (N,).
    momentum: the weight of the old row.

  Returns:
    Unit-norm rows, shape (N, D).
  """
  pos_ND = (memory_MD[idx_N] * momentum
            + jax.lax.stop_gradient(emb_ND) * (1. - momentum))
  return pos_ND / jnp.sqrt(jnp.sum(jnp.square(pos_ND), -1, keepdims=True))


def _updated_memory(mem_MD: jax.Array, mem_c_MD: jax.Array,
                    emb_ND: jax.Array, idx_N: jax.Array,
                    momentum: float) -> jax.Array:
  """mem_MD with rows idx_N replaced by `crd_memory_rows`; no gradient.

  The rows are computed from mem_c_MD (mem_MD under stop_gradient, in the
  embeddings' dtype) and stored in mem_MD's dtype.
  """
  rows_ND = crd_memory_rows(mem_c_MD, emb_ND, idx_N, momentum)
  return jax.lax.stop_gradient(
      mem_MD.at[idx_N].set(rows_ND.astype(mem_MD.dtype)))


def _check_crd_inputs(emb_s_ND: jax.Array, emb_t_ND: jax.Array,
                      idx_N: jax.Array, contrast_idx_NK1: jax.Array,
                      memory: dict[str, jax.Array]) -> None:
  """ValueError unless `crd_loss`'s arguments have consistent shapes."""
  missing = {'memory_s', 'memory_t', 'z_s', 'z_t'} - set(memory)
  if missing:
    raise ValueError(f'memory is missing keys {sorted(missing)}; build it '
                     'with crd_memory_init.')
  mem_shape_s = jnp.shape(memory['memory_s'])
  mem_shape_t = jnp.shape(memory['memory_t'])
  if len(mem_shape_s) != 2 or mem_shape_s != mem_shape_t:
    raise ValueError(
        f'memory_s and memory_t must both have shape (num_data, D); got '
        f'{mem_shape_s} and {mem_shape_t}.')
  d = mem_shape_s[1]
  for name, e in (('emb_s', emb_s_ND), ('emb_t', emb_t_ND)):
    if jnp.ndim(e) != 2 or jnp.shape(e)[1] != d:
      raise ValueError(
          f'{name} must have shape (N, D) with D={d} (the memory dim); got '
          f'{jnp.shape(e)}.')
  n = jnp.shape(emb_s_ND)[0]
  if jnp.shape(emb_t_ND)[0] != n or jnp.shape(idx_N) != (n,):
    raise ValueError(
        f'Batch mismatch: emb_s {jnp.shape(emb_s_ND)}, emb_t '
        f'{jnp.shape(emb_t_ND)}, idx {jnp.shape(idx_N)} (want (N,)).')
  if (jnp.ndim(contrast_idx_NK1) != 2 or jnp.shape(contrast_idx_NK1)[0] != n
      or jnp.shape(contrast_idx_NK1)[1] < 2):
    raise ValueError(
        f'contrast_idx must have shape (N, K+1) with N={n} and K >= 1; got '
        f'{jnp.shape(contrast_idx_NK1)}.')


def crd_loss(emb_s_ND: jax.Array,
             emb_t_ND: jax.Array,
             idx_N: jax.Array,
             contrast_idx_NK1: jax.Array,
             memory: dict[str, jax.Array],
             *,
             temperature: float = 0.07,
             momentum: float = 0.5) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CRD loss and memory update (Tian et al., ICLR 2020; RepDistiller crd/).

  `ContrastMemory.forward` (`crd_contrast_scores`, `crd_memory_rows`)
  followed by the two `ContrastLoss`es of `CRDLoss`, as a pure function of
  an explicit memory state:
    - out_s = exp(memory_t[contrast_idx] @ emb_s / T) / z_s  (student
      anchored, contrasted against the teacher memory; `out_v1`),
    - out_t = exp(memory_s[contrast_idx] @ emb_t / T) / z_t  (`out_v2`),
    where an unset Z (<= 0) is set to `mean(out) * num_data` from this batch
    (then fixed: returned in the new state, no gradient through it);
    - loss = ContrastLoss(out_s) + ContrastLoss(out_t), ContrastLoss(x) =
      -(sum_n log(x_pos / (x_pos + K Pn + eps)) + sum_{n,k} log(K Pn /
      (x_neg + K Pn + eps))) / N, with Pn = 1 / num_data, eps = 1e-7;
    - memory update (no gradient): rows idx of memory_s become
      normalize(memory_s[idx] * momentum + emb_s * (1 - momentum)), likewise
      memory_t with emb_t. The scores use the memory before the update.
  Gradients reach emb_s and emb_t through the scores only (both embedding
  heads are trained in CRD, so emb_t is NOT stop-gradient'ed; the teacher
  backbone feature fed to its head should be). Memory rows carry none.
  Repeated entries of idx_N update the same row: which one wins is
  unspecified (as torch's index_copy_). Published: T = 0.07, K = 16384
  negatives, 128-d embeddings, momentum 0.5 (loss weight 0.8 in RepDistiller).

  Args:
    emb_s_ND: L2-normalised student embeddings (`crd_embed_normalize`),
      shape (N, D).
    emb_t_ND: L2-normalised teacher embeddings, shape (N, D).
    idx_N: dataset indices of the batch examples, shape (N,).
    contrast_idx_NK1: memory rows to score, shape (N, K+1), column 0 = idx
      (the positive), the rest negatives (`crd_sample_contrast`).
    memory: state from `crd_memory_init` / a previous `crd_loss`.
    temperature: T.
    momentum: memory momentum.

  Returns:
    (loss, new_memory): scalar float32 loss and the updated state (same
    structure, shapes and dtypes as `memory`).

  Raises:
    ValueError: on inconsistent shapes or a memory dict with missing keys.
  """
  _check_crd_inputs(emb_s_ND, emb_t_ND, idx_N, contrast_idx_NK1, memory)
  mem_s = jnp.asarray(memory['memory_s'])
  mem_t = jnp.asarray(memory['memory_t'])
  num_data = jnp.shape(mem_s)[0]
  emb_s_ND = checks.as_float(emb_s_ND)
  emb_t_ND = checks.as_float(emb_t_ND)
  dtype = emb_s_ND.dtype
  mem_s_c = jax.lax.stop_gradient(mem_s).astype(dtype)
  mem_t_c = jax.lax.stop_gradient(mem_t).astype(dtype)

  out_s_NK1, z_s = crd_contrast_scores(
      mem_t_c, emb_s_ND, contrast_idx_NK1, jnp.asarray(memory['z_s'], dtype),
      temperature)
  out_t_NK1, z_t = crd_contrast_scores(
      mem_s_c, emb_t_ND, contrast_idx_NK1, jnp.asarray(memory['z_t'], dtype),
      temperature)
  loss = (_contrast_loss(out_s_NK1, num_data)
          + _contrast_loss(out_t_NK1, num_data))

  new_memory = dict(memory)
  new_memory.update(
      memory_s=_updated_memory(mem_s, mem_s_c, emb_s_ND, idx_N, momentum),
      memory_t=_updated_memory(mem_t, mem_t_c, emb_t_ND, idx_N, momentum),
      z_s=z_s.astype(jnp.asarray(memory['z_s']).dtype),
      z_t=z_t.astype(jnp.asarray(memory['z_t']).dtype))
  return loss, new_memory


def crd_sample_contrast(rng: jax.Array,
                        idx_N: jax.Array,
                        labels_N: jax.Array | None,
                        num_data: int,
                        num_negatives: int,
                        *,
                        data_labels_M: jax.Array | None = None) -> jax.Array:
  """Contrast indices for `crd_loss`: column 0 = idx, then K negatives.

  Two modes:
    - uniform (default, `data_labels_M` None; `labels_N` is then ignored and
      may be None): negatives i.i.d. uniform over [0, num_data), with
      replacement, possibly hitting idx itself or its class. This is
      `ContrastMemory`'s own fallback (AliasMethod over uniform unigrams).
    - class-aware, RepDistiller's default 'exact' mode
      (`CIFAR100InstanceSample`), when `data_labels_M` (the label of every
      training example, shape (num_data,)) and `labels_N` are given:
      negatives drawn uniformly WITHOUT replacement among the examples whose
      label differs from labels_N[n] (random keys, same-class examples
      masked, top-K). Needs K <= the number of other-class examples (the
      original falls back to sampling with replacement otherwise; here it is
      a ValueError when the labels are concrete). Costs O(N num_data) per
      call.
  Published K = 16384 (RepDistiller nce_k).

  Args:
    rng: a jax PRNG key.
    idx_N: dataset indices of the batch, shape (N,).
    labels_N: labels of the batch, shape (N,), or None (uniform mode).
    num_data: dataset size (static).
    num_negatives: K (static).
    data_labels_M: labels of all examples, shape (num_data,), or None.

  Returns:
    int32 indices, shape (N, K+1).

  Raises:
    ValueError: on bad shapes, or too few other-class examples.
  """
  if jnp.ndim(idx_N) != 1:
    raise ValueError(f'idx must have shape (N,); got {jnp.shape(idx_N)}.')
  if num_negatives < 1 or num_data < 1:
    raise ValueError(
        f'num_negatives and num_data must be positive; got {num_negatives} '
        f'and {num_data}.')
  n = jnp.shape(idx_N)[0]
  idx_N = jnp.asarray(idx_N).astype(jnp.int32)
  if data_labels_M is None:
    neg_NK = jax.random.randint(rng, (n, num_negatives), 0, num_data,
                                dtype=jnp.int32)
  else:
    if labels_N is None or jnp.shape(labels_N) != (n,):
      raise ValueError(
          f'Class-aware sampling needs labels of shape (N,) = ({n},); got '
          f'{None if labels_N is None else jnp.shape(labels_N)}.')
    if jnp.shape(data_labels_M) != (num_data,):
      raise ValueError(
          f'data_labels must have shape (num_data,) = ({num_data},); got '
          f'{jnp.shape(data_labels_M)}.')
    if num_negatives > num_data:
      raise ValueError(
          f'num_negatives={num_negatives} exceeds num_data={num_data}.')
    same_NM = (jnp.asarray(labels_N)[:, None]
               == jnp.asarray(data_labels_M)[None, :])
    if not isinstance(same_NM, jax.core.Tracer):
      available = num_data - int(jnp.max(jnp.sum(same_NM, axis=-1)))
      if num_negatives > available:
        raise ValueError(
            f'num_negatives={num_negatives} exceeds the {available} '
            'other-class examples available to some batch example.')
    keys_NM = jax.random.uniform(rng, (n, num_data))
    keys_NM = jnp.where(same_NM, -1., keys_NM)
    _, neg_NK = jax.lax.top_k(keys_NM, num_negatives)
    neg_NK = neg_NK.astype(jnp.int32)
  return jnp.concatenate([idx_N[:, None], neg_NK], axis=1)
