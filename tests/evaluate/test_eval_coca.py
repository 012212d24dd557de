"""Zero-shot evaluation of a trained CoCa goes through encode_image / encode_text as for CLIP: its accuracy is the
one computed by hand from those embeddings."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from helpers.coca_support import coca_run
from helpers.eval_support import write_wds_set
from helpers.train_support import COLORS
from vlp.evaluate import evaluate
from vlp.models import load_pretrained
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig

torch.set_num_threads(1)
TEMPLATE = "a {c} square"


def test_coca_zero_shot_accuracy_is_that_of_its_encoders(tmp_path):
    model, preprocess, tokenizer, _ = load_pretrained(coca_run(tmp_path))
    names = list(COLORS)
    labels = [i % len(names) for i in range(12)]
    images = [Image.fromarray(np.full((16, 16, 3), COLORS[names[y]], dtype=np.uint8)) for y in labels]
    folder = write_wds_set(tmp_path / "colours", [{"png": im, "cls": y} for im, y in zip(images, labels)],
                           classnames=names, templates=[TEMPLATE])
    [record] = evaluate(model, preprocess, tokenizer, EvalConfig(datasets=[EvalDatasetConfig(
        name="colours", task="zeroshot", path=str(folder))], batch_size=4), progress=False)
    with torch.no_grad():
        x = F.normalize(model.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
        y = F.normalize(model.encode_text(tokenizer([TEMPLATE.format(c=c) for c in names])), dim=-1)
    predicted = (x @ y.T).argmax(1)
    assert record["metrics"]["acc1"] == (predicted == torch.tensor(labels)).float().mean().item()
