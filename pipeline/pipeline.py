"""create_pipeline: the one DAG definition every runner uses (docs/architecture.md §2).

Pure: every input is a parameter (the config, paths, runner options); nothing is
read from the environment or at import time. Every node has an explicit id.
"""

import json
from typing import Any, Dict, Optional, Sequence, Union

from tfx import v1 as tfx
from tfx.orchestration import data_types

from components.data_gate.component import DataGate
from components.example_gen import executor as example_gen_executor
from components.example_gen.component import ConversionLogExampleGen
from components.promotion.component import Promotion
from components.pusher.component import VersionedPusher
from components.quantizer.component import Quantizer
from components.served_baseline import executor as served_baseline
from components.served_baseline.component import ServedBaseline
from components.sweep.component import SweepRecord
from components.sweep.component import SweepLookup
from components.teacher_gate.component import TeacherGate
import config as config_lib
from models import export
from models import features
from models import hparams
from pipeline import evaluation
from schemas import columns

PREPROCESSING_FN = 'models.features.preprocessing_fn'
TEACHER_RUN_FN = 'models.teacher_trainer.run_fn'
STUDENT_RUN_FN = 'models.student_trainer.run_fn'
TUNER_FN = 'models.student_tuner.tuner_fn'
# The two Trainers' node ids (pipeline/vertex.py gives each a worker pool), and
# the sweep's Tuner (a sweep run only).
TEACHER, STUDENT, TUNER = 'teacher', 'student', 'tuner'
TRAINER_IDS = (TEACHER, STUDENT)


def teacher_columns_spec(window_names) -> tfx.proto.OutputExampleSpec:
  """BulkInferrer: per window the teacher's rate, observability and observed
  exposure, and the hint vector."""
  w = window_names
  pairs = (list(zip(export.rate_outputs(w), columns.teacher_rates(w))) +
           list(zip(export.observability_outputs(w), columns.teacher_observability(w))) +
           list(zip(export.observed_exposure_outputs(w),
                    columns.teacher_observed_exposures(w))))
  cols = [tfx.proto.PredictOutputCol(output_key=key, output_column=column)
          for key, column in pairs]
  cols.append(tfx.proto.PredictOutputCol(output_key=export.HINT_OUTPUT,
                                         output_column=columns.TEACHER_HINT))
  return tfx.proto.OutputExampleSpec(output_columns_spec=[
      tfx.proto.OutputColumnsSpec(
          predict_output=tfx.proto.PredictOutput(output_columns=cols))])


def train_args(net: config_lib.NetConfig) -> tfx.proto.TrainArgs:
  """The config's train_steps if set; else none, and the run_fn derives them
  from the number of training examples (models/training.py resolve_steps)."""
  if net.train_steps:
    return tfx.proto.TrainArgs(num_steps=net.train_steps)
  return tfx.proto.TrainArgs()


def eval_args(net: config_lib.NetConfig) -> tfx.proto.EvalArgs:
  """1/20 of an explicit train_steps; else the run_fn's 1/20 of the derived."""
  if net.train_steps:
    return tfx.proto.EvalArgs(num_steps=max(1, net.train_steps // 20))
  return tfx.proto.EvalArgs()


def create_pipeline(
    cfg: config_lib.Config,
    *,
    pipeline_root: str,
    data_root: str,
    schema_path: str,
    serving_dir: str,
    bootstrap: bool = False,
    metadata_connection_config=None,
    beam_pipeline_args: Sequence[str] = (),
    snapshot_time: Optional[Union[str, data_types.RuntimeParameter]] = None,
    enable_cache: bool = False,
    trainer_custom_configs: Optional[Dict[str, Dict[str, Any]]] = None,
    force: Union[bool, data_types.RuntimeParameter] = False,
    sweep: bool = False,
    sweeps_dir: str = '',
    tuner_custom_config: Optional[Dict[str, Any]] = None,
) -> tfx.dsl.Pipeline:
  """The whole DAG: logs -> teacher -> student -> INT8 -> gate -> promote -> push.

  Args:
    cfg: the validated configuration.
    pipeline_root: where artifacts go.
    data_root: the click and conversion logs (local or gs://).
    schema_path: the curated schema file, as the executors will see it.
    serving_dir: the push destination (local or gs://).
    bootstrap: the explicit first run (production recipe, no baseline needed).
    metadata_connection_config: ML Metadata connection (local runs); None on Vertex.
    beam_pipeline_args: for every Beam component (DirectRunner or Dataflow).
    snapshot_time: T, or a RuntimeParameter; None: `cfg.window.snapshot_time`,
      else resolved at run time by the ExampleGen.
    enable_cache: TFX caching.
    trainer_custom_configs: per trainer id (`teacher`, `student`), the Google
      Cloud extension Trainer's custom_config (pipeline/vertex.py): that trainer
      runs as a Vertex Training job. None: both train in the executor's process.
    force: rerun a night whose T is already served (else everything after
      ServedBaseline is skipped); a bool, or an int RuntimeParameter on Vertex.
    sweep: a sweep run: the Tuner searches the student's hyperparameters on the
      tune split, the student trains with its best and SweepRecord records them
      under the config's fingerprint. Otherwise (sweep.reuse) SweepLookup
      gives the student the newest recorded sweep for the fingerprint, if any.
    sweeps_dir: the sweep records (local or gs://).
    tuner_custom_config: the Google Cloud extension Tuner's custom_config
      (pipeline/vertex.py): trials run as a Vertex Training job with
      sweep.parallel_trials workers. None: the stock Tuner, trials in turn.
  """
  tune_fraction = cfg.sweep.tune_fraction
  if sweep and not tune_fraction > 0:
    raise config_lib.ConfigError(
        'sweep.tune_fraction: a sweep run needs a tune split (set it above 0, '
        'e.g. 0.1; nightly runs reusing the sweep need the same value)')
  splits = list(example_gen_executor.split_names(tune_fraction))
  fingerprint = hparams.fingerprint(cfg)
  trainer_custom_configs = trainer_custom_configs or {}

  def trainer(node_id: str, **kwargs):
    """The stock Trainer, or the Vertex Training one when configured."""
    custom_config = config_lib.trainer_custom_config(cfg)
    if node_id in trainer_custom_configs:
      return tfx.extensions.google_cloud_ai_platform.Trainer(
          custom_config={**custom_config, **trainer_custom_configs[node_id]},
          **kwargs).with_id(node_id)
    return tfx.components.Trainer(custom_config=custom_config,
                                  **kwargs).with_id(node_id)

  example_gen = ConversionLogExampleGen(
      data_root=data_root, window_days=cfg.window.days,
      eval_days=cfg.window.eval_days, dataset=cfg.dataset_json(),
      label_spec=cfg.label_spec().to_json(),
      snapshot_policy=cfg.window.snapshot_policy,
      snapshot_time=snapshot_time or cfg.window.snapshot_time,
      max_conversions_per_click=cfg.example_gen.max_conversions_per_click,
      max_capped_fraction=cfg.example_gen.max_capped_fraction,
      tune_fraction=tune_fraction,
  ).with_id('ConversionLogExampleGen')
  examples = example_gen.outputs['examples']

  # The model in production, read from the serving directory as of this run's
  # eval start (the same on every runner; a backfill gets the version served
  # then). No baseline and not the bootstrap: the run stops here.
  served = ServedBaseline(examples=examples, serving_dir=serving_dir,
                          bootstrap=bootstrap, force=force).with_id('ServedBaseline')
  baseline = served.outputs[served_baseline.BASELINE_KEY]
  # A night that is already served skips everything after T is known.
  not_served = served.outputs[served_baseline.RESULT_KEY].future()[0].custom_property(
      served_baseline.ALREADY_SERVED) == 0

  with tfx.dsl.Cond(not_served):
    statistics_gen = tfx.components.StatisticsGen(
        examples=examples).with_id('StatisticsGen')
    schema_gen = tfx.components.ImportSchemaGen(
        schema_file=schema_path).with_id('ImportSchemaGen')
    schema = schema_gen.outputs['schema']
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs['statistics'],
        schema=schema).with_id('ExampleValidator')
    data_gate = DataGate(
        anomalies=example_validator.outputs['anomalies']).with_id('DataGate')

    # Trainers apply the transform graph in their input pipelines, so nothing is
    # materialised; the graph is embedded in every exported model.
    transform = tfx.components.Transform(
        examples=examples, schema=schema, preprocessing_fn=PREPROCESSING_FN,
        custom_config=features.transform_config(cfg.dataset.teacher_features()),
        materialize=False, disable_statistics=True).with_id('Transform')
    transform.add_upstream_node(data_gate)
    transform.add_upstream_node(served)

    t = cfg.model.teacher
    teacher = trainer(
        TEACHER, run_fn=TEACHER_RUN_FN, examples=examples,
        transform_graph=transform.outputs['transform_graph'], schema=schema,
        train_args=train_args(t), eval_args=eval_args(t))
    teacher_gate = TeacherGate(
        model=teacher.outputs['model'], examples=examples,
        bar=cfg.teacher_gate.to_json(),
        window_names=json.dumps(list(cfg.dataset.window_names())),
        panel=cfg.dataset.panel,
    ).with_id('TeacherGate')
    # The gate stops the run when the teacher fails; it emits no ModelBlessing.
    bulk_inferrer = tfx.components.BulkInferrer(
        examples=examples, model=teacher.outputs['model'],
        data_spec=tfx.proto.DataSpec(example_splits=splits),
        model_spec=tfx.proto.ModelSpec(
            model_signature_name=[export.PREDICT_SIGNATURE]),
        output_example_spec=teacher_columns_spec(
            cfg.dataset.window_names())).with_id('BulkInferrer')
    bulk_inferrer.add_upstream_node(teacher_gate)

    s = cfg.model.student
    warm_base = baseline if cfg.model.student_warm_start else None
    sweep_nodes = []
    hyperparameters = None
    if sweep:
      # Trials train on train and are scored on tune (never on eval, which the
      # Evaluator gates on); they warm-start as the nightly student does.
      tuner_args = dict(
          tuner_fn=TUNER_FN, examples=bulk_inferrer.outputs['output_examples'],
          transform_graph=transform.outputs['transform_graph'], schema=schema,
          base_model=warm_base,
          train_args=train_args(s),
          eval_args=tfx.proto.EvalArgs(splits=[example_gen_executor.TUNE],
                                       num_steps=1))
      custom_config = config_lib.trainer_custom_config(cfg)
      if tuner_custom_config is not None:
        tuner = tfx.extensions.google_cloud_ai_platform.Tuner(
            tune_args=tfx.proto.TuneArgs(
                num_parallel_trials=cfg.sweep.parallel_trials),
            custom_config={**custom_config, **tuner_custom_config},
            **tuner_args).with_id(TUNER)
      else:
        tuner = tfx.components.Tuner(custom_config=custom_config,
                                     **tuner_args).with_id(TUNER)
      hyperparameters = tuner.outputs['best_hyperparameters']
      record = SweepRecord(best_hyperparameters=hyperparameters,
                           sweeps_dir=sweeps_dir or cfg.paths.sweeps_dir,
                           fingerprint=fingerprint).with_id('SweepRecord')
      sweep_nodes = [tuner, record]
    elif cfg.sweep.reuse:
      lookup = SweepLookup(sweeps_dir=sweeps_dir or cfg.paths.sweeps_dir,
                           fingerprint=fingerprint).with_id('SweepLookup')
      lookup.add_upstream_node(served)
      hyperparameters = lookup.outputs['hyperparameters']
      sweep_nodes = [lookup]
    # Warm start: the served baseline keeps the float student's weights beside
    # the TFLite model (run_fn finds them from the base model path).
    student = trainer(
        STUDENT, run_fn=STUDENT_RUN_FN,
        examples=bulk_inferrer.outputs['output_examples'],
        transform_graph=transform.outputs['transform_graph'], schema=schema,
        base_model=warm_base, hyperparameters=hyperparameters,
        train_args=train_args(s), eval_args=eval_args(s))

    q = cfg.quantizer
    quantizer = Quantizer(
        model=student.outputs['model'],
        examples=bulk_inferrer.outputs['output_examples'], mode=q.mode,
        calibration_examples=q.calibration_examples,
        calibration_sampling=q.calibration_sampling,
        max_nll_increase=q.max_nll_increase, latency_samples=q.latency_samples,
        eval_label=cfg.eval_label_spec().to_json(),
        seed=cfg.model.seed,
        serving_features=json.dumps(list(cfg.dataset.serving_names())),
    ).with_id('Quantizer')

    evaluator = tfx.components.Evaluator(
        examples=bulk_inferrer.outputs['output_examples'],
        model=quantizer.outputs['quantized_model'],
        baseline_model=baseline,
        example_splits=['eval'],
        eval_config=evaluation.build_eval_config(cfg)).with_id('Evaluator')
    # The Evaluator's blessing (PoissonLogLoss thresholds) is recorded; the
    # promotion step judges the three areas and its blessing alone decides.
    promotion = Promotion(
        evaluation=evaluator.outputs['evaluation'],
        evaluator_blessing=evaluator.outputs['blessing'],
        model=quantizer.outputs['quantized_model'], baseline_model=baseline,
        examples=bulk_inferrer.outputs['output_examples'],
        config=cfg.promotion.to_json(), max_nll=cfg.gate.max_nll,
        fallback=cfg.fallback_parameter(),
        eval_label=cfg.eval_label_spec().to_json(), tcpa=cfg.dataset.tcpa,
    ).with_id('Promotion')
    # The push follows the final decision only: the Promotion's blessing.
    pusher = VersionedPusher(
        model=quantizer.outputs['quantized_model'],
        model_blessing=promotion.outputs['blessing'],
        examples=examples, push_base=serving_dir).with_id('Pusher')

  return tfx.dsl.Pipeline(
      pipeline_name=cfg.pipeline_name,
      pipeline_root=pipeline_root,
      components=[example_gen, served, statistics_gen, schema_gen,
                  example_validator, data_gate, transform, teacher, teacher_gate,
                  bulk_inferrer, *sweep_nodes, student, quantizer, evaluator,
                  promotion, pusher],
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=list(beam_pipeline_args))
