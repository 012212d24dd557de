"""In-training evaluation: rank 0 runs vlp.evaluate on the configured sets while the others wait at a barrier."""
from __future__ import annotations

import json
import math

from vlp.recipe import Recipe
from vlp.run_dir import RunDir
from vlp.train.metrics import MetricsSink
from vlp.train.trackers import log_pictures


class EvalHook:
    def __init__(self, recipe: Recipe, raw_model, tokenizer, accelerator, sink: MetricsSink, run: RunDir):
        self.recipe, self.model, self.tokenizer = recipe, raw_model, tokenizer
        self.acc, self.sink, self.path, self.run_dir = accelerator, sink, run.eval_results, run
        self.records: list[dict] = []
        self._preprocess = None
        self._kept = None  # the eval inputs every evaluation of the run reads (vlp.evaluate.kept_inputs)

    @property
    def enabled(self) -> bool:
        return bool(self.recipe.eval.datasets)

    def run(self, step: int, final: bool = False) -> None:
        """Evaluate (rank 0), log `eval/<dataset>/<metric>` and the pictures, and append the records to
        RUN_DIR/eval_results.json; the pictures go to RUN_DIR/pictures/step_NNNNNNNN/."""
        if not self.enabled:
            return
        if self.acc.is_main_process:
            self._evaluate(step, final)
        self.acc.wait_for_everyone()

    def _evaluate(self, step: int, final: bool) -> None:
        from vlp.evaluate import evaluate, write_results
        from vlp.evaluate.kept_inputs import KeptInputs, keeping
        from vlp.models import image_transform

        if self._preprocess is None:
            self._preprocess, self._kept = image_transform(self.model), KeptInputs()
        pictures = self.run_dir.pictures_at(step) if self.recipe.eval.pictures else None
        with keeping(self._kept):
            records = evaluate(self.model, self._preprocess, self.tokenizer, self.recipe.eval, str(self.acc.device),
                               model_name=self.recipe.train.run_name or "", progress=False, pictures=pictures)
        for record in records:
            record.update(step=step, final=final)
        self.records.extend(records)
        self.sink.log(step, {f"eval/{r['dataset']}/{name}": value for r in records
                             for name, value in r["metrics"].items() if _is_number(value)})
        if pictures:
            log_pictures(self.acc, pictures, step)
        previous = json.loads(self.path.read_text()) if self.path.is_file() else []
        write_results([r for r in previous if r.get("step", -1) < step] + records, self.path)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
