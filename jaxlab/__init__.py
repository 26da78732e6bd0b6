"""jaxlab: a functional JAX toolkit for deep learning and reinforcement learning.

The pure core (train state and step, losses, optimizers, metrics, data parallelism)
plus the shell around it (configs, data, checkpoints, logging, CLI).
"""

from jaxlab import data as data
from jaxlab import losses as losses
from jaxlab import metrics as metrics
from jaxlab import optim as optim
from jaxlab import parallel as parallel
from jaxlab.checkpoint import Checkpointer as Checkpointer
from jaxlab.checkpoint import CheckpointWarning as CheckpointWarning
from jaxlab.checkpoint import tree_equal as tree_equal
from jaxlab.config import ExperimentConfig as ExperimentConfig
from jaxlab.config import OptimizerConfig as OptimizerConfig
from jaxlab.config import load_config as load_config
from jaxlab.config import validate_config as validate_config
from jaxlab.errors import CheckpointError as CheckpointError
from jaxlab.errors import ConfigError as ConfigError
from jaxlab.errors import DataError as DataError
from jaxlab.errors import JaxlabError as JaxlabError
from jaxlab.logger import MetricLogger as MetricLogger
from jaxlab.logger import read_metrics as read_metrics
from jaxlab.metrics import make_metrics as make_metrics
from jaxlab.optim import learning_rate as learning_rate
from jaxlab.optim import make_optimizer as make_optimizer
from jaxlab.optim import make_schedule as make_schedule
from jaxlab.train import LossFn as LossFn
from jaxlab.train import TrainState as TrainState
from jaxlab.train import init_train_state as init_train_state
from jaxlab.train import make_eval_step as make_eval_step
from jaxlab.train import make_train_loop as make_train_loop
from jaxlab.train import make_train_step as make_train_step
from jaxlab.train import supervised_loss as supervised_loss

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "Checkpointer",
    "ConfigError",
    "DataError",
    "ExperimentConfig",
    "JaxlabError",
    "LossFn",
    "MetricLogger",
    "OptimizerConfig",
    "TrainState",
    "data",
    "init_train_state",
    "learning_rate",
    "load_config",
    "losses",
    "make_eval_step",
    "make_metrics",
    "make_optimizer",
    "make_schedule",
    "make_train_loop",
    "make_train_step",
    "metrics",
    "optim",
    "parallel",
    "read_metrics",
    "supervised_loss",
    "tree_equal",
    "validate_config",
]
