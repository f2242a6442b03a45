"""The typed configuration (docs/architecture.md §9), below the code that reads it.

`config.schema` is the dataclass tree with defaults and checks; `config.loader`
reads YAML and `--set key=value` overrides into it with errors that name the key.

  import config as config_lib
  cfg = config_lib.load_config('pipeline/configs/default.yaml', ['window.days=14'])
"""

from config.loader import from_dict
from config.loader import from_json
from config.loader import from_trainer_custom_config
from config.loader import load_config
from config.loader import parse_override
from config.loader import TRAINER_CONFIG_KEY
from config.loader import trainer_custom_config
from config.schema import BeamConfig
from config.schema import BrowserConfig
from config.schema import Config
from config.schema import ConfigError
from config.schema import DataflowConfig
from config.schema import DelayConfig
from config.schema import DistillConfig
from config.schema import EvalConfig
from config.schema import FallbackConfig
from config.schema import ExampleGenConfig
from config.schema import GateConfig
from config.schema import ModelConfig
from config.schema import NetConfig
from config.schema import ObservabilityConfig
from config.schema import PathsConfig
from config.schema import PromotionConfig
from config.schema import PriorConfig
from config.schema import PRUNING_SCHEDULES
from config.schema import PruningConfig
from config.schema import QuantizerConfig
from config.schema import RECIPES
from config.schema import ScheduleConfig
from config.schema import SNAPSHOT_POLICIES
from config.schema import SWEEP_KEYS
from config.schema import SweepConfig
from config.schema import TEACHER_GATE_MODES
from config.schema import TeacherGateConfig
from config.schema import TrainingConfig
from config.schema import VertexConfig
from config.schema import WindowConfig
from config.schema import WorkerPoolConfig
from config.schema import WorldConfig

__all__ = [
    'TRAINER_CONFIG_KEY',
    'from_dict',
    'from_json',
    'from_trainer_custom_config',
    'load_config',
    'parse_override',
    'trainer_custom_config',
    'PRUNING_SCHEDULES',
    'RECIPES',
    'SNAPSHOT_POLICIES',
    'SWEEP_KEYS',
    'TEACHER_GATE_MODES',
    'BeamConfig',
    'BrowserConfig',
    'Config',
    'ConfigError',
    'DataflowConfig',
    'DelayConfig',
    'DistillConfig',
    'EvalConfig',
    'FallbackConfig',
    'ExampleGenConfig',
    'GateConfig',
    'ModelConfig',
    'NetConfig',
    'ObservabilityConfig',
    'PathsConfig',
    'PriorConfig',
    'PruningConfig',
    'QuantizerConfig',
    'ScheduleConfig',
    'SweepConfig',
    'TeacherGateConfig',
    'TrainingConfig',
    'VertexConfig',
    'WindowConfig',
    'WorkerPoolConfig',
    'WorldConfig',
]
