"""Offline language tools for the text sources: stopword language ID and a regex word tokenizer.

Nothing here downloads a model (datatrove's LanguageFilter and its spaCy/NLTK tokenizers would):
the language of prose is told by its share of function words, and `lang_model` may name a local
fastText LID file for a user who has one.
"""
from __future__ import annotations

import contextlib
import re
from collections import Counter
from io import StringIO
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.word_tokenizers import WordTokenizer, simple_span_tokenize

from pipeline.core import records


# Stopwords: the ratio of a language's function words among a text's words is a robust, offline
# identifier for prose (English prose: ~0.4-0.5; keyword spam and gibberish: near 0).
STOPWORDS = {
    "en": "the of and to a in is that it was for on are as with his they at be this from have or by one had not "
    "but what all were when we there can an your which their said if do will each about how up out them then she "
    "many some so these would other into has more her two like him see time could no make than been its who now",
    "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an werden aus "
    "er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war haben nur oder aber vor",
    "fr": "le de un être et à il avoir ne je son que se qui ce dans en du elle au pour pas que vous par sur faire "
    "plus dire me on mon lui nous comme mais pouvoir avec tout y aller voir bien où sans tu ou leur homme si deux",
    "es": "el la de que y a en un ser se no haber por con su para como estar tener le lo todo pero más hacer o "
    "poder decir este ir otro ese si me ya ver porque dar cuando él muy sin vez mucho saber qué sobre mi alguno",
    "it": "di e il la che è per un in non a una sono del con si da le i dei della come lo ma anche gli al più nel "
    "se questo ha delle alla io mi ci quando molto hanno essere tutto loro questa ne suo sua perché solo",
    "nl": "de en van ik te dat die in een hij het niet zijn is was op aan met als voor had er maar om hem dan zou "
    "of wat mijn men dit zo door over ze zich bij ook tot je mij uit der daar haar naar heb hoe heeft hebben",
    "pt": "de a o que e do da em um para é com não uma os no se na por mais as dos como mas foi ao ele das tem à "
    "seu sua ou ser quando muito há nos já está eu também só pelo pela até isso ela entre era depois sem",
}
_STOP = {lang: frozenset(words.split()) for lang, words in STOPWORDS.items()}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
MIN_STOPWORD_RATIO = 0.15  # below this no language is claimed: "unknown"


UNKNOWN, NON_LATIN = "unknown", "non_latin"


def stopword_language(text: str) -> tuple[str, float]:
    """(language, score) by stopword ratio.

    ("non_latin", share) when most letters are outside the Latin script (the stopword lists cannot
    tell those languages apart); ("unknown", ratio) when Latin-script text reaches no language's
    MIN_STOPWORD_RATIO: keyword lists, gibberish, link lists."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return UNKNOWN, 0.0
    letters = [c for w in words for c in w] + ["\ufffd"] * text.count("\ufffd")  # undecodable counts as foreign
    latin = sum(c < "\u0250" for c in letters) / len(letters)  # Basic Latin .. Latin Extended-B
    if latin < 0.5:
        return NON_LATIN, round(1 - latin, 4)
    counts = Counter(words)
    ratios = {lang: sum(counts[w] for w in stop) / len(words) for lang, stop in _STOP.items()}
    lang = max(sorted(ratios), key=ratios.get)
    score = round(ratios[lang], 4)
    return (lang if score >= MIN_STOPWORD_RATIO else UNKNOWN), score


class LanguageFilter(BaseFilter):
    """Keep documents in `languages`; tags every document with metadata lang and lang_score.

    "unknown" (Latin script, no language's stopword profile) passes: such pages are mostly spam,
    gibberish and boilerplate, which GPT-3 left to the quality classifier, and that classifier
    needs them among its raw-crawl negatives. A fastText LID model labels them itself."""

    name = "🌍 language"

    def __init__(self, languages: tuple[str, ...], lang_model: str = "", exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.languages = tuple(languages)
        self.lang_model = lang_model
        self._model = None

    def identify(self, text: str) -> tuple[str, float]:
        if not self.lang_model:
            return stopword_language(text)
        if self._model is None:
            import fasttext

            if not Path(self.lang_model).exists():
                raise FileNotFoundError(f"cc.lang_model {self.lang_model} does not exist (nothing is downloaded)")
            with contextlib.redirect_stderr(StringIO()):  # 0.9.2 prints a stale API notice on every load
                self._model = fasttext.load_model(self.lang_model)
        # a LIST of strings: fasttext 0.9.2 + numpy 2 fails on a single string (ANCHORS.md)
        labels, probs = self._model.predict([" ".join(text.split())], k=1)
        return labels[0][0].replace("__label__", ""), round(float(probs[0][0]), 4)

    def filter(self, doc: Document):
        lang, score = self.identify(doc.text)
        doc.metadata[records.LANG] = lang
        doc.metadata[records.LANG_SCORE] = score
        return not self.languages or lang in self.languages + (UNKNOWN,) or (False, "wrong_language")


class RegexWordTokenizer(WordTokenizer):
    """Offline word tokenizer for datatrove's Gopher filters: runs of word characters (with inner
    apostrophes) and single punctuation marks, as spaCy's blank English tokenizer splits plain
    prose. datatrove's own choices all fail offline here: its English and "whitespace" tokenizers
    import spaCy (not installed) and the NLTK one downloads punkt (ANCHORS.md)."""

    _WORDS = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
    _SENTS = re.compile(r"[^.!?\n]+[.!?\n]*")

    def __init__(self):
        super().__init__("en")

    def word_tokenize(self, text: str) -> list[str]:
        return self._WORDS.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in self._SENTS.findall(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return list(simple_span_tokenize(text, self.sent_tokenize(text)))
