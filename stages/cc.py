"""Stage `cc`: Common Crawl WARC/WET files -> extracted, language-filtered crawl documents (GPT-3 sec. 2.2).

In:     --in      folder of *.warc.gz / *.warc / *.warc.wet.gz files
Out:    --out     document folder (docs/, removed/too_short, removed/wrong_language, _manifest.json);
        reports/cc.json (records read, drops and errors per reason, languages, truth P/R with --truth)
Params: cc.min_words, cc.languages, cc.lang_model, cc.gopher_repetition, cc.gopher_quality; extract.* (trafilatura options)
Usage:  python stages/cc.py --in data/raw/sample/cc --out data/interim/cc --truth data/raw/sample/truth.json
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, executor, params, storage
from pipeline.sources import cc, extract


def main() -> None:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("--in", dest="in_dir", required=True, help="folder of WARC/WET files")
    parser.add_argument("--out", required=True, help="output document folder")
    parser.add_argument("--truth", default=None, help="sample truth.json: report precision/recall of drops")
    args = cli.parse_args(parser)
    cfg = params.config(cc.CCConfig, "cc")
    ecfg = params.config(extract.ExtractConfig, "extract")
    exec_cfg = params.config(executor.ExecutorConfig, "executor")  # output-neutral: not declared in dvc.yaml
    rep = cc.run(cfg, ecfg, args.in_dir, args.out, truth_path=args.truth, exec_cfg=exec_cfg)
    rep.write()


if __name__ == "__main__":
    storage.run_stage(main)
