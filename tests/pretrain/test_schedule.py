"""The per-step learning-rate schedule: a linear warm-up to the peak, then a cosine over the
remaining steps down to min_lr (DeiT's and MAE's shape), and an exact round trip on resume."""

from __future__ import annotations

import pytest
import torch
from helpers import read_metrics

from pretrain.engine.data import synthetic_data
from pretrain.engine.loop import build_scheduler, train
from pretrain.supervised import SupervisedTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the cores are shared

PEAK, WARMUP_LR, MIN_LR = 1e-3, 1e-6, 1e-5


def _schedule(cfg: dict, steps_per_epoch: int) -> list[float]:
    """The lr of every update 0..total (the last one: after the final step)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    sched = build_scheduler(cfg, opt, steps_per_epoch)
    total = int(cfg["epochs"]) * steps_per_epoch
    lrs = []
    for t in range(total + 1):
        sched.step_update(num_updates=t)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_training_reaches_the_peak_lr_right_after_warm_up(tmp_path, tiny_config):
    # 32 images at batch 16: 2 steps an epoch, warm-up 2 steps, cosine over the other 6
    cfg = tiny_config(epochs=4, warmup_epochs=1, lr=PEAK, warmup_lr=WARMUP_LR, min_lr=MIN_LR)
    train(cfg, SupervisedTask(), synthetic_data(4, 8, 32), tmp_path)
    lrs = [e["lr"] for e in read_metrics(tmp_path, "train")]  # the lr each step used
    assert len(lrs) == 8
    assert lrs[0] == pytest.approx(WARMUP_LR, rel=1e-9)
    assert lrs[1] == pytest.approx(WARMUP_LR + (PEAK - WARMUP_LR) / 2, rel=1e-9)
    assert lrs[2] == pytest.approx(PEAK, rel=1e-9)  # old timm default: 0.854 x PEAK
    assert all(b <= a for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[-1] > MIN_LR


@pytest.mark.parametrize("epochs, warmup", [(5, 1), (3, 0), (20, 5)])
def test_schedule_shape_warm_up_peak_cosine_min(tiny_config, epochs, warmup):
    steps = 7
    cfg = tiny_config(epochs=epochs, warmup_epochs=warmup, warmup_lr=WARMUP_LR, min_lr=MIN_LR)
    lrs = _schedule(cfg, steps)
    w = warmup * steps
    ramp = [WARMUP_LR + t * (PEAK - WARMUP_LR) / w for t in range(w)]
    assert lrs[:w] == pytest.approx(ramp, rel=1e-9)
    assert lrs[w] == pytest.approx(PEAK, rel=1e-9)
    after = lrs[w:]
    assert all(b <= a for a, b in zip(after, after[1:], strict=False))
    assert after[-1] == pytest.approx(MIN_LR, rel=1e-9)
    # half-way through the cosine the lr is half-way between the peak and min_lr
    mid = (len(after) - 1) // 2
    if (len(after) - 1) % 2 == 0:
        assert after[mid] == pytest.approx((PEAK + MIN_LR) / 2, rel=1e-9)


def test_scheduler_state_round_trips(tiny_config):
    cfg = tiny_config(epochs=5, warmup_epochs=1, warmup_lr=WARMUP_LR, min_lr=MIN_LR)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    first = build_scheduler(cfg, opt, 4)
    first.step_update(num_updates=9)
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    second = build_scheduler(cfg, opt2, 4)
    second.load_state_dict(first.state_dict())
    for t in range(9, 21):
        first.step_update(num_updates=t)
        second.step_update(num_updates=t)
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_warm_up_as_long_as_the_run_stays_on_its_ramp(tiny_config):
    # warmup_warning() says so; the schedule must still build (no empty cosine)
    cfg = tiny_config(epochs=2, warmup_epochs=2, warmup_lr=WARMUP_LR, min_lr=MIN_LR)
    lrs = _schedule(cfg, 3)
    assert all(b > a for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] == pytest.approx(PEAK, rel=1e-9)
