"""Training: the accelerate loop (GradCache accumulation, exact resume, checkpoints, logging, in-training eval)."""
from vlp.train.checkpoint import CheckpointError, find_resumable, verify
from vlp.train.gradcache import Features, compute_gradients, forward_features
from vlp.train.loop import NonFiniteLossError, RunResult, train
from vlp.train.metrics import read_metrics
from vlp.train.optim import build_optimizer, build_scheduler, lr_multiplier
from vlp.train.plot import plot_run

__all__ = ["train", "RunResult", "NonFiniteLossError", "CheckpointError", "find_resumable", "verify",
           "compute_gradients", "forward_features", "Features", "build_optimizer", "build_scheduler", "lr_multiplier",
           "read_metrics", "plot_run"]
