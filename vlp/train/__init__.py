"""Training: the accelerate loop (GradCache accumulation, exact resume, checkpoints, logging, in-training eval)."""
from vlp.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "train": "loop", "RunResult": "loop", "NonFiniteLossError": "loop", "compute_gradients": "gradcache",
    "forward_features": "gradcache", "Features": "gradcache", "build_optimizer": "optim", "build_scheduler": "optim",
    "lr_multiplier": "optim", "read_metrics": "metrics", "plot_run": "plot", "register_component": "components"})
