"""pipeline/lm/triton_loss.py: the fused loss-and-gradient kernel against F.cross_entropy and autograd.

Runs where triton is installed: on a GPU as compiled, on the CPU through triton's interpreter (TRITON_INTERPRET=1,
set here before the kernel module is imported). The CPU wheel of torch does not bring triton; `make test` installs
the version the Makefile pins where none is present, and runs these on the CPU (about 80 s).
"""
import dataclasses
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tiny_torchrun
from conftest import require_triton

require_triton("the loss kernel's tests (on CPU through triton's interpreter)")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel is decorated, i.e. when triton_loss is imported

from pipeline.lm import tokens, triton_loss  # noqa: E402
from pipeline.lm.model import GPT, GPTConfig, ModelConfig  # noqa: E402
from pipeline.lm.train import TrainConfig, train  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_gives_the_loss_and_its_gradient_over_the_real_columns(dtype):
    g = torch.Generator().manual_seed(0)
    rows, n_cols, width = 37, 257, 384  # 384 - 257 padding columns, as model.padded_vocab leaves them
    logits = (torch.randn(rows, width, generator=g) * 3).to(dtype)
    logits[:, n_cols:] = 1e4  # the padding must neither count in the softmax nor get a gradient
    targets = torch.randint(n_cols, (rows,), generator=g)
    targets[[3, 20]] = -1  # ignored rows: no loss, no gradient, not in the mean's count
    ref_in = logits[:, :n_cols].float().requires_grad_()
    ref = F.cross_entropy(ref_in, targets, ignore_index=-1)
    ref.backward()
    work = logits.clone().to(DEVICE)
    loss = triton_loss.loss_and_grad_in_place(work, targets.to(DEVICE), n_cols, block=64)  # 5 blocks a row
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert float(loss) == pytest.approx(ref.item(), rel=tol)
    grad = work.float().cpu()
    assert torch.allclose(grad[:, :n_cols], ref_in.grad, atol=tol * 0.05, rtol=tol)
    assert torch.count_nonzero(grad[:, n_cols:]) == 0
    assert torch.count_nonzero(grad[[3, 20]]) == 0


def test_block_is_read_at_each_call(monkeypatch):
    """bench/train_speed.py --loss-block sets triton_loss.BLOCK after import: the kernel must take it from there
    (a width that is not a power of 2 is refused by triton, which shows the setting was read)."""
    logits, targets = torch.zeros(2, 64, device=DEVICE), torch.zeros(2, dtype=torch.long, device=DEVICE)
    monkeypatch.setattr(triton_loss, "BLOCK", 48)
    with pytest.raises(Exception, match="power of 2"):
        triton_loss.loss_and_grad_in_place(logits, targets, 64)
    monkeypatch.setattr(triton_loss, "BLOCK", 32)
    assert float(triton_loss.loss_and_grad_in_place(logits, targets, 64)) == pytest.approx(math.log(64))


def test_bench_row_with_its_own_block_runs_the_kernel_at_that_block(monkeypatch):
    """bench/train_speed.py --also loss_block=N[/W]: the row's step runs with BLOCK = N and W warps (a width triton
    refuses shows it was read) and leaves the defaults in place for the other rows, also when the step fails."""
    from bench.train_speed import with_loss_block

    logits, targets = torch.zeros(2, 64, device=DEVICE), torch.zeros(2, dtype=torch.long, device=DEVICE)
    seen = []

    def step(x, y):
        seen.append((triton_loss.BLOCK, triton_loss.WARPS))
        return triton_loss.loss_and_grad_in_place(x.clone(), y, 64)
    monkeypatch.setattr(triton_loss, "BLOCK", 32768)
    monkeypatch.setattr(triton_loss, "WARPS", 32)
    assert float(with_loss_block(step, 32)(logits, targets)) == pytest.approx(math.log(64))
    assert float(with_loss_block(step, 16, warps=2)(logits, targets)) == pytest.approx(math.log(64))
    with pytest.raises(Exception, match="power of 2"):
        with_loss_block(step, 48)(logits, targets)
    assert seen == [(32, 32), (16, 2), (48, 32)] and (triton_loss.BLOCK, triton_loss.WARPS) == (32768, 32)


def test_model_trains_the_same_through_the_kernel():
    """The GPT's loss and every parameter's gradient match the plain path (padded vocabulary, a scaled dloss)."""
    cfg = GPTConfig(vocab_size=203, block_size=16, n_layer=2, n_head=2, n_embd=32)  # padded to 256 rows
    torch.manual_seed(0)
    plain = GPT(cfg).to(DEVICE)
    kernel = GPT(cfg).to(DEVICE)
    kernel.load_state_dict(plain.state_dict())
    plain.fused_head_loss, kernel.triton_head_loss = False, True
    idx = torch.randint(cfg.vocab_size, (3, 16), device=DEVICE)
    targets = torch.randint(cfg.vocab_size, (3, 16), device=DEVICE)
    targets[0, :4] = -1
    losses = {}
    for name, model in (("plain", plain), ("kernel", kernel)):
        logits, loss = model(idx, targets)
        (loss / 2).backward()  # a dloss other than 1, as accumulation over 2 micro-batches gives
        losses[name] = (logits, float(loss.detach()))
    assert losses["kernel"][0] is None  # the kernel path never materialises logits for the caller
    assert losses["kernel"][1] == pytest.approx(losses["plain"][1], rel=1e-5)
    for (name, p), q in zip(plain.named_parameters(), kernel.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name
    kernel.eval()
    with torch.no_grad():  # evaluation keeps the plain path: real logits out
        logits, _ = kernel(idx, targets)
    assert logits.shape == (3, 16, cfg.vocab_size)


def test_under_autocast_the_hidden_states_reach_the_kernel_in_bf16_and_train_as_the_plain_path(monkeypatch):
    """Under bf16 autocast (the GPU step) the final hidden states are cast to bf16 before the graph break, so they
    cross it and their gradient comes back at half the bytes; loss and gradients stay the plain path's."""
    cfg = GPTConfig(vocab_size=203, block_size=16, n_layer=2, n_head=2, n_embd=32)
    torch.manual_seed(0)
    plain, kernel = GPT(cfg).to(DEVICE), GPT(cfg).to(DEVICE)
    kernel.load_state_dict(plain.state_dict())
    plain.fused_head_loss, kernel.triton_head_loss = False, True
    crossing = []
    eager_part = triton_loss.triton_head_loss
    monkeypatch.setattr(triton_loss, "triton_head_loss", lambda x, *rest: crossing.append(x.dtype) or eager_part(x, *rest))
    idx = torch.randint(cfg.vocab_size, (3, 16), device=DEVICE)
    targets = torch.randint(cfg.vocab_size, (3, 16), device=DEVICE)
    losses = {}
    for name, model in (("plain", plain), ("kernel", kernel)):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            _, loss = model(idx, targets)
        (loss / 2).backward()
        losses[name] = float(loss.detach())
    assert crossing == [torch.bfloat16]
    assert losses["kernel"] == pytest.approx(losses["plain"], rel=2e-2)
    for (name, p), q in zip(plain.named_parameters(), kernel.parameters()):
        assert p.grad.dtype == q.grad.dtype == torch.float32, name  # fp32 master gradients either way
        scale = p.grad.abs().max().item()
        assert (p.grad - q.grad).abs().max().item() <= 0.05 * scale + 1e-6, name


def test_the_cast_to_bf16_is_on_the_compiled_side_of_the_graph_break():
    """torch.compile's graph ends with the bf16 cast of the hidden states (so inductor fuses it into the final
    LayerNorm's kernel) and the kernel stays outside it: one graph, no second graph for the cast."""
    cfg = GPTConfig(vocab_size=203, block_size=16, n_layer=1, n_head=2, n_embd=32)
    model = GPT(cfg).to(DEVICE)
    model.triton_head_loss = True
    idx = torch.randint(cfg.vocab_size, (2, 16), device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        explained = torch._dynamo.explain(model)(idx, idx)
    assert explained.graph_count == 1
    graph = explained.graphs[0].graph
    hidden = list(graph.nodes)[-1].args[0][0]  # the graph's first output: what crosses into the kernel's call
    assert hidden.op == "call_method" and hidden.target == "to" and torch.bfloat16 in hidden.args
    assert not any("TritonHeadLoss" in str(node.target) for node in graph.nodes)


def test_train_stage_with_the_kernel_learns_as_with_the_default(tmp_path, monkeypatch):
    """train.loss_kernel: triton through the whole loop (accumulation over 2 micro-batches, evals, checkpoint)."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "tok"
    stream = np.tile(np.arange(50), 60)
    tokens.write_shard(data / "train_00000.bin", stream, 64, 63)
    tokens.write_shard(data / "val_00000.bin", stream[:600], 64, 63)
    mcfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32)
    base = TrainConfig(max_steps=12, batch_size=8, lr=0.01, warmup_steps=2, eval_interval=6, eval_batches=2,
                       grad_accum_steps=2)
    runs = {kernel: train(data, f"models/{kernel}", f"reports/{kernel}", mcfg,
                          dataclasses.replace(base, loss_kernel=kernel), seed=3, threads=1, progress=False).to_dict()
            for kernel in ("torch", "triton")}
    assert runs["triton"]["final_val_loss"] < 0.8 * runs["triton"]["unigram_entropy_nats"]  # it learned
    # CPU: fp32 both ways (equal to 6 digits when written); GPU: bf16 gradients, rounded in a different order
    tol = 1e-4 if DEVICE == "cpu" else 2e-2
    assert runs["triton"]["final_val_loss"] == pytest.approx(runs["torch"]["final_val_loss"], rel=tol)


@pytest.mark.skipif(DEVICE == "cuda" and torch.cuda.device_count() < 2, reason="2 ranks on CUDA need 2 GPUs")
def test_fsdp_through_the_kernel_matches_fsdp_without_it(tmp_path):
    """train.strategy fsdp with loss_kernel triton (2 ranks under torchrun; gloo and the interpreter on a CPU): the
    LM head's weight is the root's gathered tensor and its gradient goes back through FSDP's reduce-scatter. Same
    losses as torch's path."""
    reports = {}
    for kernel in ("torch", "triton"):
        tiny_torchrun.setup(tmp_path / kernel, strategy="fsdp", loss_kernel=kernel)
        # the whole environment: TRITON_INTERPRET (set above on a CPU) and wherever triton is installed
        reports[kernel] = tiny_torchrun.stage(tmp_path / kernel, env={**os.environ, "GPT_REPRO_THREADS": "1"})
    assert reports["triton"]["loss_kernel"] == "triton" and reports["torch"]["loss_kernel"] == "torch"
    assert reports["triton"]["strategy"] == "fsdp" and reports["triton"]["world_size"] == 2
    tol = 1e-5 if DEVICE == "cpu" else 2e-2
    for key in ("last_step_train_loss", "final_val_loss", "final_train_loss"):
        assert reports["triton"][key] == pytest.approx(reports["torch"][key], rel=tol), key
