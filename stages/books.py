"""Stage `books`: BooksCorpus-like book documents from .txt/.epub files (GPT-1).

In:  --in folder of .txt (Project Gutenberg style) and .epub books
Out: --out document folder: docs/ (kept books), removed/too_short/, _manifest.json;
     reports/books.json (books in/out, dropped per reason, unreadable files, truth P/R on the sample)
Params: books.min_words, books.strip_gutenberg, books.fix_text
Usage: python stages/books.py --in data/raw/sample/books --out data/interim/books --truth data/raw/sample/truth.json
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

from pipeline.core import cli, params, storage
from pipeline.sources import books


def main() -> None:
    ap = cli.stage_parser(__doc__)
    ap.add_argument("--in", dest="in_dir", required=True, help="folder of .txt/.epub books (searched recursively)")
    ap.add_argument("--out", required=True, help="document folder to write (docs/, removed/, _manifest.json)")
    ap.add_argument("--truth", default=None, help="the sample's truth.json, to score the drops (optional)")
    args = cli.parse_args(ap)

    cfg = params.config(books.BooksConfig, "books")
    rep = books.run(cfg, args.in_dir, args.out, truth_path=args.truth)
    data = rep.write()
    print(f"books: {data['docs_out']}/{data['docs_in']} kept, dropped {data['dropped']}, errors {data['errors']}"
          + (f", truth P {data['truth']['precision']} R {data['truth']['recall']}" if "truth" in data else ""))


if __name__ == "__main__":
    storage.run_stage(main)
