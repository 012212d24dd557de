"""`vlp plot`'s figures, read back from matplotlib: a curve logged under two names is one panel, and no eval panel
puts geometry numbers of different scales on one axis."""
import matplotlib

from vlp.train.plot import eval_figure, group_figure, series

matplotlib.use("Agg")
GEOMETRY = {"modality_gap": 0.8, "centroid_cosine": 0.3, "matched_cosine": 0.5, "unmatched_cosine": 0.1,
            "alignment": 1.1, "uniformity_image": -2.0, "uniformity_text": -1.5, "uniformity_cross": -0.5,
            "separability": 0.9, "effective_rank_image": 30.0, "effective_rank_text": 20.0}


def _drawn(fig) -> dict[str, list[tuple]]:
    """panel title → the (x, y) series of its lines, for the panels that draw any."""
    return {ax.get_title(): [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.lines]
            for ax in fig.axes if ax.lines}


def test_a_curve_logged_twice_is_one_panel_and_no_two_panels_draw_the_same_series():
    import matplotlib.pyplot as plt

    records = [{"step": s, "loss": 3.0 / s, "objective/contrastive_loss": 3.0 / s, "objective/uniformity": -s / 10}
               for s in (10, 20, 30)]
    fig = group_figure(plt, series(records), "loss", "run")
    drawn = _drawn(fig)
    assert list(drawn) == ["loss = objective/contrastive_loss", "objective/uniformity"]
    every = [s for lines in drawn.values() for s in lines]
    assert len(every) == len(set(every)) == 2
    plt.close(fig)


def test_geometry_metrics_of_different_scales_get_panels_of_their_own():
    import matplotlib.pyplot as plt

    metrics = {"acc1": ([30, 60], [0.2, 0.4]), "acc5": ([30, 60], [0.5, 0.7]),
               **{f"geometry_{k}": ([30, 60], [v, v * 1.1]) for k, v in GEOMETRY.items()}}
    fig = eval_figure(plt, "set", metrics)
    drawn = _drawn(fig)
    assert list(drawn) == ["scores", "cosines", "uniformity (lower = more spread)", "effective rank", "alignment",
                           "modality_gap", "separability"]
    assert max(len(lines) for lines in drawn.values()) == 3  # was one axis with ten geometry lines
    every = [s for lines in drawn.values() for s in lines]
    assert len(every) == len(set(every)) == len(metrics)  # each metric drawn once
    plt.close(fig)
