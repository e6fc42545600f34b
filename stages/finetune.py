r"""Stage `finetune`: GPT-1 supervised fine-tuning on a multiple-choice task vs zero-shot (GPT-1 sec. 3.2-4.1).

In:     --model      pretrained checkpoint (models/gpt/ckpt.pt)
        --tokenizer  tokenizer folder; the task tokens <|start|> <|delim|> <|extract|> are added to a copy in memory
        --tasks      folder of the task's files (sample: data/raw/sample/finetune, planted; real-mini: the real PIQA)
Out:    --out        predictions.jsonl (lambda, index, pred, gold, probs per test item);
        reports/finetune.json (zero-shot and fine-tuned accuracy per lambda, split, steps, wall time);
        reports/plots/finetune/accuracy.json and loss_lambda_<w>.json (task loss per step)
Params: finetune.* (task, lm_weights, transfer_layers, lr, batch_size, epochs, ...), seed
Usage:  python stages/finetune.py --model models/gpt/ckpt.pt --tokenizer models/tokenizer \
            --tasks data/raw/sample/finetune --out reports/finetune
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import os

import torch

from pipeline.core import cli, params, report, storage
from pipeline.finetune import finetune, loop


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="pretrained GPT checkpoint (ckpt.pt)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder holding tokenizer.json")
    parser.add_argument("--tasks", required=True, help="folder of the task files (e.g. valid.jsonl + valid-labels.lst)")
    parser.add_argument("--out", required=True, help="folder for predictions.jsonl")
    args = cli.parse_args(parser)
    torch.set_num_threads(int(os.environ.get("GPT_REPRO_THREADS", "2")))
    cfg = params.config(loop.FinetuneConfig, "finetune")
    rep = report.StageReport("finetune")
    res = finetune.run(args.model, args.tokenizer, args.tasks, args.out, cfg, params.load("seed"), rep)
    rep.write()
    print(f"finetune: {res['task']} ({res['split']}): zero-shot acc {res['zero_shot']['acc']}, " + ", ".join(
        f"fine-tuned {k} acc {v['acc']}" for k, v in res["finetuned"].items()) + f" (chance {res['chance_acc']})")


if __name__ == "__main__":
    storage.run_stage(main)
