"""accelerate's TensorBoard tracker with the hyperparameters in the run's own event file.

accelerate's `store_init_configuration` calls `SummaryWriter.add_hparams`, which writes them to a sub-run named by
a timestamp, then writes hparams.yml into a second timestamp-named folder: TensorBoard listed each vlp run three
times, once empty. RUN_DIR/recipe.yaml already holds the recipe, so no yaml copy is kept.
"""
from __future__ import annotations

from accelerate.tracking import TensorBoardTracker, on_main_process


class OneRunTensorBoard(TensorBoardTracker):
    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(values, {}):  # the experiment, session start and end summaries add_hparams writes
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()
