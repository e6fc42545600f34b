"""Stage `fewshot`: zero-, one- and few-shot accuracy curves of the trained GPT (GPT-3 sec. 3).

In:     --model      checkpoint (models/gpt/ckpt.pt)
        --tokenizer  tokenizer folder
        --eval       folder of eval files (LAMBADA, HellaSwag, PIQA are curved; absent ones are skipped)
Out:    reports/fewshot.json (per task and k: acc, acc_norm, chance, prompts cut by the context; the protocol:
        prompt format, shot selection, seed); reports/plots/fewshot/<task>.json (k, acc) for `dvc plots show`
Params: fewshot.ks, fewshot.max_examples, fewshot.batch_size; seed (shot draws)
Usage:  python stages/fewshot.py --model models/gpt/ckpt.pt --tokenizer models/tokenizer --eval data/raw/sample/eval
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.claims import fewshot
from pipeline.core import cli, params, report, storage
from pipeline.lm import bpe, checkpoint


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="GPT checkpoint (ckpt.pt)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder holding tokenizer.json")
    parser.add_argument("--eval", dest="eval_dir", required=True, help="folder of eval set files")
    args = cli.parse_args(parser)
    cfg = params.config(fewshot.FewshotConfig, "fewshot")
    gpt, _ = checkpoint.load_checkpoint(args.model)
    tok = bpe.load(args.tokenizer)
    rep = report.StageReport("fewshot")
    res = fewshot.curve(gpt, tok, args.eval_dir, cfg, params.load("seed"), bpe.eot_id(tok))
    for name, rows in fewshot.plot_rows(res).items():
        report.write_plot("fewshot", name, rows)
    rep.docs_in = rep.docs_out = sum(m["n"] for per_k in res["tasks"].values() for m in per_k.values())
    rep.extra.update(res)
    rep.write()
    for name, per_k in res["tasks"].items():
        print(f"fewshot: {name}: " + ", ".join(f"k={k} acc {m['acc']}" for k, m in per_k.items()))


if __name__ == "__main__":
    storage.run_stage(main)
