"""Pictures of each evaluation: the numbers behind them against naive references, the files every evaluation writes
(in training and by `vlp eval`) from embeddings encoded once, and `vlp plot`'s eval curves (one figure per set)."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlp.cli import main
from vlp.evaluate.pictures import PICTURES, confusion_counts, gap_plane, matched_unmatched, top_images
from vlp.run_dir import RunDir

matplotlib.use("Agg")


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_gap_plane_is_the_gap_direction_and_the_first_component_of_the_rest():
    from sklearn.decomposition import PCA

    # the gap (0.3 along one axis) is smaller than the spread along another (x3): a plain PCA would hide it
    x, y = _unit(40, 8, 0).double(), _unit(30, 8, 1).double()
    x[:, 0] += 0.3
    x[:, 1] *= 3
    y[:, 1] *= 3
    px, py, explained = gap_plane(x, y)
    both = torch.cat([x, y]).numpy()
    gap = x.mean(0).numpy() - y.mean(0).numpy()
    unit = gap / np.linalg.norm(gap)
    along = (both - both.mean(0)) @ unit
    got = torch.cat([px, py]).numpy()
    np.testing.assert_allclose(got[:, 0], along, atol=1e-10)
    np.testing.assert_allclose(px[:, 0].mean() - py[:, 0].mean(), np.linalg.norm(gap), atol=1e-10)  # the gap, whole
    rest = both - np.outer(both @ unit, unit)
    second = PCA(n_components=1).fit_transform(rest)[:, 0]
    np.testing.assert_allclose(got[:, 1] * np.sign(got[:, 1] @ second), second, atol=1e-8)
    total = ((both - both.mean(0)) ** 2).sum()
    np.testing.assert_allclose(explained.numpy(), (got ** 2).sum(0) / total, atol=1e-12)


def test_matched_and_unmatched_cosines_match_a_loop():
    x, y = _unit(7, 5, 2), _unit(7, 5, 3)
    y[4] = y[1]  # one text paired with two images (as a class embedding is): no negative for either
    matched, unmatched = matched_unmatched(x, y)
    loop = [float(x[i] @ y[j]) for i in range(7) for j in range(7) if not torch.equal(y[i], y[j])]
    assert len(loop) == 7 * 6 - 2
    np.testing.assert_allclose(matched.numpy(), [float(x[i] @ y[i]) for i in range(7)], atol=1e-6)
    np.testing.assert_allclose(sorted(unmatched.tolist()), sorted(loop), atol=1e-6)


def test_confusion_counts_match_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    got = confusion_counts(torch.from_numpy(predicted), torch.from_numpy(labels), 6)
    np.testing.assert_array_equal(got.numpy(), confusion_matrix(labels, predicted, labels=range(6)))


def test_top_images_match_a_sort_with_earlier_images_winning_ties():
    queries, images = _unit(5, 4, 4), _unit(30, 4, 5)
    images[7] = images[3]  # a tie: the earlier image ranks first
    got = top_images(queries, images, 5)
    for q in range(5):
        scores = [float(queries[q] @ images[i]) for i in range(30)]
        assert got[q].tolist() == sorted(range(30), key=lambda i: (-scores[i], i))[:5]


def test_retrieval_mosaic_puts_each_image_in_its_cell_framed_by_whether_it_is_the_true_one():
    from vlp.evaluate.pictures import BAND, CELL, GAP, HIT_FRAME, MISS_FRAME, TOP, retrieval_mosaic

    colors = [(200, 30 * c, 10 * r) for r in range(2) for c in range(TOP)]
    rows = [[Image.new("RGB", (8, 8), colors[r * TOP + c]) for c in range(TOP)] for r in range(2)]
    rows[1][3] = Image.new("RGB", (16, 8), (0, 0, 255))  # wider than tall: fitted to the width, centred
    hits = [[c == 0 for c in range(TOP)], [c == 2 for c in range(TOP)]]
    mosaic = retrieval_mosaic(rows, hits)
    assert mosaic.shape == (2 * (BAND + CELL + GAP), TOP * (CELL + GAP), 3) and mosaic.dtype == np.uint8
    for r in range(2):
        for c in range(TOP):
            y, x = r * (BAND + CELL + GAP) + BAND, c * (CELL + GAP)
            assert (mosaic[y - BAND:y] == 255).all()  # the band for the cell's rank
            middle = tuple(mosaic[y + CELL // 2, x + CELL // 2])
            assert middle == ((0, 0, 255) if (r, c) == (1, 3) else colors[r * TOP + c])
            assert tuple(mosaic[y, x + CELL // 2]) == (HIT_FRAME if hits[r][c] else MISS_FRAME)
            inside_a_thick_frame = tuple(mosaic[y + 3, x + CELL // 2])
            if hits[r][c]:
                assert inside_a_thick_frame == HIT_FRAME
            elif (r, c) != (1, 3):
                assert inside_a_thick_frame == colors[r * TOP + c]  # a 1-pixel frame, then the image
    y, x = 2 * BAND + CELL + GAP, 3 * (CELL + GAP)
    assert tuple(mosaic[y + 3, x + CELL // 2]) == (255, 255, 255)  # above the wide image: padding


def test_every_in_training_evaluation_writes_its_pictures(evaluated_digits):
    run_dir, paths = evaluated_digits
    run = RunDir(run_dir)
    assert [p.name for p in run.picture_steps()] == ["step_00000030", "step_00000060"]
    for folder in run.picture_steps():
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}
        assert files == {f"digits_zeroshot/{PICTURES[k]}" for k in ("modality_gap", "similarity", "confusion")} | \
            {f"digits_retrieval/{PICTURES[k]}" for k in ("modality_gap", "similarity", "retrieval")}
        for path in folder.rglob("*.png"):
            with Image.open(path) as image:
                assert image.size[0] > 200 and np.asarray(image.convert("L")).std() > 10  # a drawn figure


def test_vlp_eval_writes_pictures_from_embeddings_encoded_once(evaluated_digits, tmp_path, monkeypatch):
    """Drawing the pictures encodes nothing: `vlp eval` with pictures runs the towers exactly as often as without."""
    import vlp.evaluate.encode as encode

    run_dir, _ = evaluated_digits
    calls = {"encode_image": 0, "encode_text": 0}
    original = encode._encode

    def counted(encoder, inputs, device):
        calls[encoder.__name__] += len(inputs)
        return original(encoder, inputs, device)
    monkeypatch.setattr(encode, "_encode", counted)
    assert main(["eval", "--model", str(run_dir), "--no-progress"]) == 0
    without = dict(calls)
    calls.update(encode_image=0, encode_text=0)
    assert main(["eval", "--model", str(run_dir), "--no-progress", "--out", str(tmp_path / "res.json")]) == 0
    assert calls == without and without["encode_image"] == 2 * 200
    drawn = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "res.pictures").rglob("*.png"))
    assert len(drawn) == 6 and "res.pictures/digits_zeroshot/confusion.png" in drawn


def test_plot_draws_eval_curves_one_figure_per_set_and_lists_the_pictures(evaluated_digits, tmp_path, capsys):
    import matplotlib.pyplot as plt

    from vlp.train.metrics import read_metrics
    from vlp.train.plot import eval_figure, eval_series, series

    run_dir, _ = evaluated_digits
    assert main(["plot", str(run_dir), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert {"eval_digits_zeroshot.png", "eval_digits_retrieval.png"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "eval.png").exists()
    assert "pictures of the newest evaluation (step_00000060)" in printed and "retrieval.png" in printed
    curves = eval_series(series(read_metrics(run_dir)))
    assert set(curves) == {"digits_zeroshot", "digits_retrieval"}
    single = {m: (steps[-1:], values[-1:]) for m, (steps, values) in curves["digits_zeroshot"].items()}
    fig = eval_figure(plt, "digits_zeroshot", single)  # a run evaluated once: every metric, a point each
    panels = [ax for ax in fig.axes if ax.lines]
    assert sum(len(ax.lines) for ax in panels) == len(single) and all(len(ax.lines) <= 3 for ax in panels)
    assert json.dumps(sorted(curves["digits_zeroshot"]["acc1"][0])) == "[30, 60]"
    plt.close(fig)


def test_pictures_of_a_set_smaller_than_the_grid(tmp_path):
    """Three images, one text per class shared by two of them: every picture is drawn, none fails on the sizes."""
    from types import SimpleNamespace

    from vlp.evaluate.pictures import Evidence, draw_pictures

    images = [Image.new("RGB", (16, 16), c) for c in ("red", "green", "blue")]
    eval_set = SimpleNamespace(classnames=["a", "b"], samples=lambda: iter((im, None) for im in images))
    x, classes = _unit(3, 4, 6), _unit(2, 4, 7)
    labels = torch.tensor([0, 1, 0])
    evidence = Evidence(eval_set, x, classes[labels], x, classes=classes, labels=labels, text_emb=classes[labels],
                        captions=["a", "b", "a"], text_to_image=torch.arange(3))
    written = draw_pictures(evidence, tmp_path, "tiny")
    assert sorted(p.name for p in written) == sorted(PICTURES.values())


def test_eval_pictures_false_draws_none(tmp_path):
    from helpers.eval_support import write_wds_set
    from helpers.train_support import COLORS, make_shards, recipe_dict, write_recipe

    from vlp.train import train

    names = list(COLORS)
    samples = [{"png": Image.new("RGB", (16, 16), COLORS[c]), "cls": i} for i, c in enumerate(names)]
    eval_dir = write_wds_set(tmp_path / "colors", samples, classnames=names, templates=["a {c} square"])
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="2 steps")
    recipe["eval"] = {"datasets": [{"name": "colors", "task": "zeroshot", "path": str(eval_dir)}], "workers": 0}
    for pictures in (False, True):
        recipe["eval"]["pictures"] = pictures
        recipe["train"]["run_name"] = f"pictures_{pictures}"
        run = RunDir(train(write_recipe(tmp_path / "run.yaml", recipe)).run_dir)
        assert json.loads(run.eval_results.read_text())[0]["metrics"]["acc1"] >= 0
        assert len(list(run.pictures.rglob("*.png"))) == (3 if pictures else 0)
