"""Both architectures: embeddings + normalised numerics -> MLP tower -> one
log-rate head per delay window; pConvs = the sum of the window rates.

See docs/architecture.md §5.

The teacher reads serving and teacher-only features and is about 3x the student's
dense parameters (counted separately from embedding tables, which scale with
vocabulary, not with the tower).
"""

from typing import Dict, Sequence

import tensorflow as tf

from schemas import columns

if not tf.keras.__name__.startswith('tf_keras'):
  # TFX 1.16 and TFMA need Keras 2; with Keras 3 exported models do not load in
  # the BulkInferrer's TF1 session (variables are not restored).
  raise RuntimeError('TensorFlow is using Keras 3: set TF_USE_LEGACY_KERAS=1 before '
                     'TensorFlow is imported (the Makefile and images do)')

LOG_RATES = 'log_rates'
HINT = 'hint'
AUX_LOG_RATES = 'aux_log_rates'
# The teacher's observability head: per window, a shift of the prior's observed
# share on the logit scale (0 = the prior).
OBS_LOGIT_SHIFT = 'obs_logit_shift'
HINT_PROJECTION = 'hint_projection'
# Initial log-rate of every head, about e^-4.5 ~ 1% per window: near the data, so
# early steps do not spend themselves on the intercept.
INITIAL_LOG_RATE = -4.5


def model_inputs(cols: Sequence[columns.Column]) -> Dict[str, tf.keras.Input]:
  """Keras inputs for transformed features (int64 ids, float32 numerics), [B, 1]."""
  out = {}
  for col in cols:
    categorical = col.kind == columns.Kind.CATEGORICAL
    out[col.name] = tf.keras.Input(shape=(1,), name=col.name,
                                   dtype=tf.int64 if categorical else tf.float32)
  return out


def _l2(l2: float):
  return tf.keras.regularizers.L2(l2) if l2 > 0 else None


def embed(inputs: Dict[str, tf.Tensor], cols: Sequence[columns.Column],
          embedding_dim: int, l2: float = 0.0) -> tf.Tensor:
  """Concatenates an embedding per categorical id and the numeric features."""
  parts = []
  for col in cols:
    name = col.name
    if col.kind == columns.Kind.CATEGORICAL:
      e = tf.keras.layers.Embedding(col.buckets, embedding_dim,
                                    embeddings_regularizer=_l2(l2),
                                    name=f'embedding_{name}')(inputs[name])
      parts.append(tf.keras.layers.Reshape((embedding_dim,),
                                           name=f'flat_{name}')(e))
    else:
      parts.append(inputs[name])
  return tf.keras.layers.Concatenate(name='features')(parts)


def build_tower(cols: Sequence[columns.Column], n_windows: int,
                hidden_units: Sequence[int], hint_layer: int,
                embedding_dim: int, dropout: float = 0.0, l2: float = 0.0,
                name: str = 'tower', aux_heads: bool = False,
                hint_projection: int = 0,
                observability_head: bool = False) -> tf.keras.Model:
  """inputs -> {'log_rates': [B, windows], 'hint': [B, hidden_units[hint_layer]]}.

  The window heads are one Dense(windows) layer: the same as a Dense(1) head per
  window on the shared last hidden layer, in one op. Optional training-only
  outputs: 'aux_log_rates' (auxiliary window heads on the last hidden layer) and
  'hint_projection' (a linear map of the hint to `hint_projection` units, the
  FitNets g) and 'obs_logit_shift' (the teacher's observability head, which
  starts at 0, the prior). Serving exports read only 'log_rates', so these are
  pruned there.
  """
  inputs = model_inputs(cols)
  x = embed(inputs, cols, embedding_dim, l2)
  hint = None
  for i, units in enumerate(hidden_units):
    x = tf.keras.layers.Dense(units, activation='relu', kernel_regularizer=_l2(l2),
                              name=f'dense_{i}')(x)
    if i == hint_layer:
      hint = x
    if dropout > 0:
      x = tf.keras.layers.Dropout(dropout, name=f'dropout_{i}')(x)
  log_rates = tf.keras.layers.Dense(
      n_windows, name='window_heads', dtype='float32', kernel_regularizer=_l2(l2),
      bias_initializer=tf.keras.initializers.Constant(INITIAL_LOG_RATE))(x)
  outputs = {LOG_RATES: log_rates, HINT: hint}
  if aux_heads:
    outputs[AUX_LOG_RATES] = tf.keras.layers.Dense(
        n_windows, name='aux_heads', dtype='float32', kernel_regularizer=_l2(l2),
        bias_initializer=tf.keras.initializers.Constant(INITIAL_LOG_RATE))(x)
  if observability_head:
    outputs[OBS_LOGIT_SHIFT] = tf.keras.layers.Dense(
        n_windows, name='observability_head', dtype='float32',
        kernel_regularizer=_l2(l2), kernel_initializer='zeros')(x)
  if hint_projection:
    outputs[HINT_PROJECTION] = tf.keras.layers.Dense(
        hint_projection, name='hint_projection', dtype='float32')(hint)
  return tf.keras.Model(inputs, outputs, name=name)


def build_teacher(cfg) -> tf.keras.Model:
  """The teacher from a pipeline.config.Config."""
  t = cfg.model.teacher
  d = cfg.dataset
  return build_tower(d.teacher_features(), len(d.windows), t.hidden_units,
                     t.hint_layer,
                     cfg.model.embedding_dim, t.dropout, t.l2, name='teacher',
                     observability_head=cfg.model.teacher_observability_head)


def build_student_tower(cfg, aux_heads: bool = False,
                        hint_projection: int = 0,
                        observability_head: bool = False) -> tf.keras.Model:
  """The student from a pipeline.config.Config (serving features only)."""
  s = cfg.model.student
  d = cfg.dataset
  return build_tower(d.serving_features(), len(d.windows), s.hidden_units,
                     s.hint_layer,
                     cfg.model.embedding_dim, s.dropout, s.l2, name='student',
                     aux_heads=aux_heads, hint_projection=hint_projection,
                     observability_head=observability_head)


def parameter_counts(model: tf.keras.Model) -> Dict[str, int]:
  """Dense (tower and heads) and embedding parameters, counted separately."""
  dense = embedding = 0
  for layer in model.layers:
    n = int(sum(tf.size(w).numpy() for w in layer.trainable_weights))
    if isinstance(layer, tf.keras.layers.Embedding):
      embedding += n
    elif isinstance(layer, tf.keras.layers.Dense):
      dense += n
  return {'dense': dense, 'embedding': embedding}


def rescale_embeddings(network: tf.keras.Model, cols: Sequence[columns.Column],
                       target: float = 2.0) -> None:
  """Scales each embedding table to abs-max `target`, and the first dense layer's
  matching kernel rows by the inverse: the float function is unchanged.

  Why: TFLite's int8 CONCATENATION gives all its inputs one scale, set by the
  z-scored numerics (abs up to ~5), while L2-regularised embeddings are ~0.05: they
  would get a handful of int8 levels. At abs-max `target` they use the range.
  """
  first = network.get_layer('dense_0')
  kernel, bias = first.get_weights()
  row = 0
  for col in cols:
    name = col.name
    if col.kind != columns.Kind.CATEGORICAL:
      row += 1
      continue
    layer = network.get_layer(f'embedding_{name}')
    (table,) = layer.get_weights()
    width = table.shape[1]
    peak = float(abs(table).max())
    if peak > 0:
      c = target / peak
      layer.set_weights([table * c])
      kernel[row:row + width] /= c
    row += width
  if row != kernel.shape[0]:
    raise AssertionError(f'feature widths {row} do not match dense_0 inputs '
                         f'{kernel.shape[0]}')
  first.set_weights([kernel, bias])
