"""bench/train_speed.make_step, the step every GPU speed row times: its compiled-update variant (--compiled-update)
must train as the eager clip + fused AdamW does, or its rows would time a different recipe."""
from __future__ import annotations

import torch

from bench.train_speed import foreach_twin, make_step
from pipeline.lm.model import GPT, GPTConfig
from pipeline.lm.recipe import TrainConfig, make_optimizer

TINY = GPTConfig(vocab_size=128, block_size=16, n_layer=2, n_head=2, n_embd=32)


def test_foreach_twin_keeps_groups_and_hyperparameters():
    model = GPT(TINY)
    opt = make_optimizer(model, TrainConfig(lr=3e-4, weight_decay=0.1))
    twin = foreach_twin(opt)
    assert twin.defaults["foreach"] and not twin.defaults["fused"]
    assert len(twin.param_groups) == len(opt.param_groups) >= 2  # decayed and not
    for a, b in zip(opt.param_groups, twin.param_groups):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        for key in ("lr", "betas", "eps", "weight_decay"):
            assert a[key] == b[key], key
        assert isinstance(b["lr"], torch.Tensor) and b["capturable"]  # a tensor lr: a new value is no new graph


def test_compiled_update_trains_as_the_eager_fused_step():
    torch.manual_seed(0)
    batches = [(torch.randint(0, 128, (4, 16)), torch.randint(0, 128, (4, 16))) for _ in range(3)]
    params, losses = {}, {}
    for compiled in (False, True):
        torch.manual_seed(1)
        model = GPT(TINY)
        start = [p.detach().clone() for p in model.parameters()]
        step = make_step(model, make_optimizer(model, TrainConfig(lr=1e-2)), "cpu", compiled_update=compiled)
        losses[compiled] = [step(x, y) for x, y in batches]
        params[compiled] = [p.detach().clone() for p in model.parameters()]
    assert losses[False][-1] < losses[False][0]  # it trained at all
    assert all(abs(a - b) < 1e-4 for a, b in zip(losses[True], losses[False])), losses
    travel = max((a - b).abs().max().item() for a, b in zip(params[False], start))
    apart = max((a - b).abs().max().item() for a, b in zip(params[True], params[False]))
    # foreach vs fused AdamW, eager vs inductor: the same update up to float rounding (the first steps divide by
    # a tiny sqrt(v), which magnifies it), far under how far 3 steps at lr 1e-2 move the weights
    assert travel > 1e-2 and apart < 1e-3 * travel, (travel, apart)


def test_compiled_update_takes_a_new_lr_every_step_without_recompiling():
    """The stage sets the lr every step; the compiled update must take each new value as data, not as a constant
    that recompiles the graph (after 8 recompiles torch.compile would fall back to eager for good)."""
    import torch._dynamo

    torch.manual_seed(0)
    model = GPT(TINY)
    step = make_step(model, make_optimizer(model, TrainConfig(lr=1e-2)), "cpu", compiled_update=True)
    x, y = torch.randint(0, 128, (4, 16)), torch.randint(0, 128, (4, 16))
    step(x, y)  # compiles
    before = [p.detach().clone() for p in model.parameters()]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for lr in (5e-3, 0.0):
            for group in step.optimizer.param_groups:
                group["lr"].fill_(lr)
            step(x, y)
    # lr 0 for the last step: AdamW's decoupled decay and the update both scale with lr, so nothing moves then
    moved = [p.detach().clone() for p in model.parameters()]
    step(x, y)
    assert any((a - b).abs().max() > 0 for a, b in zip(before, moved))
    assert all(torch.equal(a, p.detach()) for a, p in zip(moved, model.parameters()))


def test_also_rows_refuse_what_they_cannot_time():
    """--also rows share ours' compiled model: only variants outside its graph are accepted, each with its needs."""
    import argparse

    import pytest

    from bench.train_speed import also_steps

    model = GPT(TINY)
    opt = make_optimizer(model, TrainConfig())
    args = argparse.Namespace(sdpa=None, compiled_update=False, loss_kernel=None)
    assert list(also_steps(["compiled_update"], model, opt, "cpu", args)) == ["ours+compiled_update"]
    with pytest.raises(SystemExit, match="--also"):  # a block without the kernel it sizes
        also_steps(["loss_block=16384"], model, opt, "cpu", args)
    kernel = argparse.Namespace(**{**vars(args), "loss_kernel": "triton"})
    assert list(also_steps(["loss_block=8192/16"], model, opt, "cpu", kernel)) == ["ours+loss_block=8192/16"]
    for spec in ("bf16_residual", "loss_block=3000", "loss_block=8192/12", "loss_block=0"):  # a graph change; not 2^k
        with pytest.raises(SystemExit, match="--also"):
            also_steps([spec], model, opt, "cpu", kernel)
    with pytest.raises(SystemExit, match="--also"):  # already the row's own update
        also_steps(["compiled_update"], model, opt, "cpu", argparse.Namespace(**{**vars(args), "compiled_update": True}))
