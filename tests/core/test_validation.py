"""core/validation.py: which validation is best, for a metric where higher is better and one where lower is."""
from __future__ import annotations

import pytest
import torch

from common_utils.evaluation.evaluator import EvalProtocol, EvalResult
from core import validation
from core.runtime import DistInfo


class _Log:
    """The logger calls a Validator makes, recorded."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    warning = info

    def scalars(self, values, step, prefix="") -> None:
        pass

    def image(self, *args) -> bool:
        return True


@pytest.mark.parametrize("watch,scores", [
    # (student, teacher) per validation; lower LPIPS is better, higher PSNR is
    ("lpips", [(0.40, 0.45), (0.30, 0.25), (0.35, 0.50)]),
    ("psnr", [(20.0, 19.0), (22.0, 23.0), (21.0, 18.0)]),
])
def test_the_best_checkpoint_follows_the_direction_of_the_watched_metric(monkeypatch, watch, scores):
    feed = iter(value for pair in scores for value in pair)

    def fake_evaluate(net, loader, device, protocol, **kwargs):
        value = next(feed)
        return EvalResult(rows=[{"name": "a", "psnr": value if watch == "psnr" else 20.0, "ssim": 0.5,
                                 "lpips": value if watch == "lpips" else 0.3}])

    monkeypatch.setattr(validation, "evaluate", fake_evaluate)
    v = validation.Validator([], EvalProtocol(lpips=torch.nn.Identity()), watch, DistInfo(), torch.device("cpu"),
                             make_loader=lambda shard: [], log=_Log())
    nets = {"student": torch.nn.Identity(), "teacher": torch.nn.Identity()}
    improved = [v.run(nets, step)[1] for step in (1, 2, 3)]
    assert improved == [["student", "teacher"], ["student", "teacher"], []]
    assert v.best["student"]["iter"] == 2 and v.best["student"]["score"] == pytest.approx(scores[1][0])
    name, record = v.overall_best()
    assert name == "teacher" and record["iter"] == 2 and record["score"] == pytest.approx(scores[1][1])


def test_validation_shows_progress_and_says_once_how_long_it_takes(monkeypatch):
    seen = []

    def fake_evaluate(net, loader, device, protocol, progress=None, **kwargs):
        seen.append(progress)
        for _ in progress(range(3)):  # the bar wraps the loader
            pass
        return EvalResult(rows=[{"name": "a", "psnr": 20.0, "ssim": 0.5, "lpips": 0.3}])

    monkeypatch.setattr(validation, "evaluate", fake_evaluate)
    log = _Log()
    v = validation.Validator(list(range(3)), EvalProtocol(lpips=torch.nn.Identity()), "psnr", DistInfo(),
                             torch.device("cpu"), make_loader=lambda shard: [], log=log)
    nets = {"student": torch.nn.Identity(), "teacher": torch.nn.Identity()}
    for step in (1, 2):
        v.run(nets, step)
    assert len(seen) == 4 and all(callable(p) for p in seen)  # every network's pass has a progress bar
    assert any("3 image(s) x 2 network(s)" in line for line in log.lines)
    took = [line for line in log.lines if line.startswith("validation took")]
    assert len(took) == 1  # said once, after the first validation
