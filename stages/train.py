"""Stage `train`: pretrain a GPT on the token shards (GPT-1/2/3 recipe, nanoGPT-style loop).

In:  --data   token folder (<split>_*.bin shards + meta.json, from the tokenize stage)
Out: --out    checkpoint folder: ckpt.pt (model args, weights, optimizer, step, RNG + sampler state,
              params, tokenizer sha256); it resumes like the periodic data/resume/train/<fingerprint>/resume.pt
     --live   dvclive folder: metrics.json and plots/metrics/{train_loss,val_loss,lr,grad_norm,batch_size,
              tokens_per_s[,mfu]}.tsv
     reports/train.json (final val/train loss, unigram entropy baseline, tokens/s, params, MFU on GPU)
Params: seed, model.* (preset; sizes when preset is tiny; overrides), train.* (AdamW, schedule, global
        batch, accumulation, GPT-3 batch ramp, compile, eval/checkpoint cadence, peak TFLOPs for MFU,
        strategy ddp|fsdp, deterministic, loss_kernel auto|torch|triton, residual_dtype auto|float32|bfloat16).
Resume: rerun the same command after a kill; it continues from the last resume checkpoint.
Env: GPT_REPRO_THREADS (torch threads, default 2); GPT_REPRO_CPU_ISA (avx2, the default: one CPU code path, so
     a CPU-trained model's bytes do not depend on the CPU's kind; native: the libraries' own choice;
     pipeline/core/cpu_numerics.py). Under torchrun, WORLD_SIZE processes, DDP replicas or
     FSDP shards (train.strategy; the checkpoint is the same whole-tensor file either way):
     torchrun --standalone --nproc_per_node=8 stages/train.py --data ... --out ... --live ...
Usage: python stages/train.py --data data/processed/tokens --out models/gpt --live reports/train
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, storage
from pipeline.lm.model import ModelConfig
from pipeline.lm.distributed import exit_after_collectives, is_master
from pipeline.lm.train import TrainConfig, train


def main() -> None:
    ap = cli.stage_parser(__doc__)
    ap.add_argument("--data", required=True, help="token shard folder (train_*.bin, val_*.bin, meta.json)")
    ap.add_argument("--out", required=True, help="checkpoint folder; ckpt.pt is written there")
    ap.add_argument("--live", required=True, help="dvclive output folder for metrics.json and loss curves")
    args = cli.parse_args(ap)
    mcfg = params.config(ModelConfig, "model")
    tcfg = params.config(TrainConfig, "train")
    report = train(args.data, args.out, args.live, mcfg, tcfg, seed=params.load("seed"))
    if is_master():  # under torchrun, rank 0 alone writes the report
        data = report.write()
        print(f"train: val loss {data['final_val_loss']:.4f} vs unigram {data['unigram_entropy_nats']:.4f} nats, "
              f"{data['tokens_per_s']:.0f} tokens/s, {data['params']:,} params")
    exit_after_collectives(tcfg.strategy)  # a process that ran collectives ends here (why: its docstring)


if __name__ == "__main__":
    storage.run_stage(main)
