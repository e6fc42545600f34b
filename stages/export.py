"""Stage `export`: the trained GPT as a Hugging Face GPT-2 folder (GPT2LMHeadModel + AutoTokenizer).

In:     --ckpt       checkpoint (models/gpt/ckpt.pt, pipeline.lm.checkpoint.load_checkpoint)
        --tokenizer  tokenizer folder (tokenizer.json)
Out:    --out        config.json, model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json;
                     for a model that is not GPT-2-shaped (GPT-1 post-LN, GPT-3 banded) only NOT_EXPORTED.txt
        reports/export.json (exported, reason if not, params, files and sizes, check: transformers' logits vs
        ours on one block, max_abs_logit_diff, and AutoTokenizer's ids vs ours)
Params: none (the architecture comes from the checkpoint)
Usage:  python stages/export.py --ckpt models/gpt/ckpt.pt --tokenizer models/tokenizer --out models/gpt-hf
Then:   transformers.GPT2LMHeadModel.from_pretrained("models/gpt-hf"); AutoTokenizer.from_pretrained("models/gpt-hf")
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import os

from pipeline.core import cli, report, storage
from pipeline.lm import export


def main(argv: list[str] | None = None) -> dict:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--ckpt", required=True, help="GPT checkpoint (ckpt.pt)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder holding tokenizer.json (copied along)")
    parser.add_argument("--out", required=True, help="folder for the Hugging Face files (replaced as a whole)")
    args = cli.parse_args(parser, argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the check loads local files only; never reach the Hub
    rep = report.StageReport("export")
    res = export.run(args.ckpt, args.out, args.tokenizer, report=rep)
    rep.write()
    if not res["exported"]:
        print(f"export: NOT exported: {res['reason']}", file=sys.stderr)
        return res
    print(f"export: {res['params']:,} params -> {args.out} ({', '.join(res['files'])}); check {res['check']}")
    return res


if __name__ == "__main__":
    storage.run_stage(main)
