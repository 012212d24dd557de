"""accelerate trackers: TensorBoard events in RUN_DIR/tensorboard/, W&B through accelerate's own tracker, and the
evaluation pictures sent to both."""
from __future__ import annotations

from pathlib import Path

from vlp.run_dir import RunDir


def tracker_list(names: list[str], run: RunDir) -> list:
    """`log_with` for accelerate. TensorBoard is built here because accelerate would write below
    project_dir/<project name>; W&B keeps accelerate's (project = the run name unless logging.wandb_project)."""
    from vlp.train.tensorboard_tracker import OneRunTensorBoard

    # run_name "" makes TensorBoard's log dir exactly RUN_DIR/tensorboard/ (accelerate joins logging_dir/run_name)
    return [OneRunTensorBoard("", str(run.tensorboard)) if name == OneRunTensorBoard.name else name
            for name in names]



def log_pictures(accelerator, folder: Path, step: int) -> None:
    """Send every PNG below `folder` (one evaluation's pictures) to the trackers, as `pictures/<set>/<name>`."""
    if not accelerator.trackers:
        return
    import numpy as np
    from accelerate.tracking import TensorBoardTracker, WandBTracker
    from PIL import Image

    images = {}
    for path in sorted(folder.rglob("*.png")):
        with Image.open(path) as image:
            images[f"pictures/{path.parent.name}/{path.stem}"] = np.asarray(image.convert("RGB"))
    if not images:
        return
    for tracker in accelerator.trackers:
        if tracker.name == TensorBoardTracker.name:
            tracker.log_images({k: v[None] for k, v in images.items()}, step=step, dataformats="NHWC")
        elif tracker.name == WandBTracker.name:
            tracker.log_images({k: [v] for k, v in images.items()}, step=step)
