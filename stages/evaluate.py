r"""Stage `evaluate`: zero/few-shot scores of the trained GPT (GPT-2 sec. 3, GPT-3 sec. 3).

In:     --model      checkpoint (models/gpt/ckpt.pt, pipeline.lm.checkpoint.load_checkpoint)
        --tokenizer  tokenizer folder (tokenizer.json)
        --eval       folder of eval files (LAMBADA, WikiText raw, HellaSwag, PIQA; absent ones are skipped)
        --tokens     token shards folder (val_*.bin for validation perplexity)
Out:    --out        examples.jsonl (task, index, correct, loglik per example), samples.txt (greedy generations);
        reports/evaluate.json (per task metrics with chance rates, val perplexity, reference figures)
Params: eval.max_examples, eval.batch_size, eval.num_fewshot; seed (few-shot draws)
Usage:  python stages/evaluate.py --model models/gpt/ckpt.pt --tokenizer models/tokenizer \
            --eval data/raw/sample/eval --tokens data/processed/tokens --out reports/evaluate
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import logging

from pipeline.core import cli, params, report, storage
from pipeline.lm import bpe, checkpoint
from pipeline.evaluation import evaluate


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="GPT checkpoint (ckpt.pt)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder holding tokenizer.json")
    parser.add_argument("--eval", dest="eval_dir", required=True, help="folder of eval set files")
    parser.add_argument("--tokens", default=None, help="token shards folder (val_*.bin) for validation perplexity")
    parser.add_argument("--out", required=True, help="folder for examples.jsonl and samples.txt")
    args = cli.parse_args(parser)
    cfg = params.config(evaluate.EvalConfig, "eval")
    gpt, ckpt = checkpoint.load_checkpoint(args.model)
    tok = bpe.load(args.tokenizer)
    if ckpt.get("tokenizer_sha256") and ckpt["tokenizer_sha256"] != bpe.tokenizer_sha(args.tokenizer):
        logging.warning("the checkpoint was trained with another tokenizer (sha256 differs): scores are meaningless")
    rep = report.StageReport("evaluate")
    rep.extra["checkpoint"] = {"iter": ckpt.get("iter"), "params": gpt.num_params(),
                               "tokenizer_sha256": ckpt.get("tokenizer_sha256")}
    res = evaluate.run(gpt, tok, args.eval_dir, args.out, cfg, args.tokens, seed=params.load("seed"),
                       eot=bpe.eot_id(tok), report=rep)
    rep.write()
    for name, m in res["tasks"].items():
        print(f"evaluate: {name}: " + ", ".join(f"{k} {v}" for k, v in m.items() if k not in ("file",)))
    print(f"evaluate: val {res.get('val')}")


if __name__ == "__main__":
    storage.run_stage(main)
