"""Seeded English-like text generator for the embedded sample (pipeline/sample/generator.py).

The sample must be learnable (a tiny GPT should get well below its unigram entropy), separable
(a fastText quality classifier must tell prose from spam, gibberish and boilerplate, as GPT-3's
classifier did for Common Crawl) and clean (no accidental 8/13-gram overlap between eval examples
and training text, so GPT-3 appendix C style contamination finds only the planted leaks).

Prose is a small grammar: sentence templates whose slots ($N noun, $A adjective, $C character...)
are filled from a per-document vocabulary (a topic with its own terms, a cast, places) with Zipfian
weights. Templates give learnable structure; per-document vocabularies over ~3,000 words make long
n-gram collisions between documents rare (sample.py then *guarantees* none with eval examples).
Pure Python; every draw comes from a `random.Random` the caller seeds.
"""
from __future__ import annotations

import random
import string

NOUNS = """river garden window letter house village mountain harbor bridge forest lantern doctor teacher
engine market station island valley castle storm winter summer morning evening kitchen library school
captain soldier farmer merchant painter sailor journey promise secret answer question problem reason
road street tower wall door table chair bottle basket blanket candle mirror picture clock coin key ring
horse dog cat bird fish sheep wolf fox field meadow orchard lake shore cliff cave hill stone tree flower
leaf branch root seed harvest bread cheese apple soup coffee tea wine machine wheel wagon boat ship
train camera radio paper book story song poem voice memory dream shadow light fire smoke cloud rain snow
wind sky moon star sun friend brother sister mother father uncle stranger neighbor child family crowd
council company factory office bank museum church theater hospital prison court army battle treaty
map compass ladder rope hammer needle thread coat hat boot glove scarf pocket purse ticket message
signal report record archive museum collection project plan method system network device sensor
battery circuit signal pattern sample experiment theory model result measure budget policy election
mayor senator judge lawyer reporter editor author reader student professor scientist engineer nurse
patient visitor traveler guide pilot driver cook baker tailor miner hunter fisher gardener keeper
""".split()
ADJECTIVES = """old young quiet loud bright dark small large heavy light cold warm early late narrow wide
careful gentle strange familiar ancient modern simple complex silent sudden steady distant nearby hidden
broken golden silver wooden empty crowded famous humble proud honest clever tired hungry eager patient
anxious calm brave shy lucky rare common sharp soft rough smooth clear cloudy wet dry fresh stale
bitter sweet green blue red grey white black pale deep shallow long short slow quick rich poor busy
lonely useful fragile sturdy precise vague formal private public local foreign northern southern
eastern western central remote rural urban seasonal annual weekly difficult obvious curious serious
""".split()
VERBS = [  # (base, past); the grammar uses the past for narrative and the base after modals
    ("carry", "carried"), ("open", "opened"), ("close", "closed"), ("find", "found"), ("lose", "lost"),
    ("build", "built"), ("break", "broke"), ("repair", "repaired"), ("watch", "watched"), ("follow", "followed"),
    ("paint", "painted"), ("study", "studied"), ("visit", "visited"), ("leave", "left"), ("keep", "kept"),
    ("sell", "sold"), ("buy", "bought"), ("send", "sent"), ("bring", "brought"), ("hold", "held"),
    ("measure", "measured"), ("describe", "described"), ("examine", "examined"), ("collect", "collected"),
    ("protect", "protected"), ("replace", "replaced"), ("remember", "remembered"), ("forget", "forgot"),
    ("cross", "crossed"), ("climb", "climbed"), ("pull", "pulled"), ("push", "pushed"), ("hide", "hid"),
    ("show", "showed"), ("move", "moved"), ("clean", "cleaned"), ("guard", "guarded"), ("test", "tested"),
    ("plan", "planned"), ("design", "designed"), ("publish", "published"), ("record", "recorded"),
    ("announce", "announced"), ("reject", "rejected"), ("approve", "approved"), ("fund", "funded"),
    ("survey", "surveyed"), ("map", "mapped"), ("trace", "traced"), ("mend", "mended"), ("wrap", "wrapped"),
]
INTRANSITIVE = """waited laughed arrived vanished returned slept listened hesitated wandered smiled
shivered rested worked traveled argued agreed whispered paused disappeared recovered improved declined
grew changed fell rose stayed""".split()
ADVERBS = """slowly quickly quietly suddenly carefully gently early later again together alone rarely
often soon nearly barely openly clearly briefly happily sadly calmly firmly loudly softly""".split()
NUMBERS = "two three four five six seven eight nine ten twelve twenty thirty forty fifty hundred".split()
SYLLABLES = """ba be bo da de di do ka ke ko la le li lo ma me mi mo na ne ni no ra re ri ro sa se
si so ta te ti to va ve vi vo za ze ar en il or an el in on ul as es is os ur ber dan kel mor tan ves
wil nor sel bren dal fen gar hal jor lin mar per quin ros stel thor val wen""".split()
PLACE_SUFFIXES = ["ford", "ton", "vale", "wick", "bury", "field", "haven", "moor", "stead", "brook", "port"]

NARRATIVE = [
    "$C $V the $A $N near the $N .", "the $N $I $D .", "$C said that the $N was $A and $A .",
    "in $P , the $A $N $I before $C $I .", "$C $V the $N , and $C $V the $N .",
    "when the $N $I , $C $V a $A $N .", "nobody in $P had seen such a $A $N .",
    "$C looked at the $N and $I .", "the $T of the $N was $A , so $C $I $D .",
    '" the $N is $A , " said $C .', "after the $N , $C went to $P .", "$C kept the $T in a $A $N .",
    "the $A $N could not $B the $N .", "$C wanted to $B the $T before the $N .",
    "$D , $C $V the $T and $I .", "there was a $A $N behind the $N .",
]
EXPOSITORY = [
    "the $T of $P has $V the $A $N .", "researchers in $P $V the $T and the $N .",
    "according to $C , the $T is $A for the $N .", "the $A $T $V $NUM $NS in $Y .",
    "many $NS in $P now depend on the $T .", "the report $V that the $N of the $T was $A .",
    "critics said the $T was too $A for $P .", "$C , who $V the $T in $Y , called it $A .",
    "in $Y , the $T $I $D across $P .", "officials plan to $B the $T by $Y .",
    "the $A $N is the main $T of $P .", "each $N in the $T was $A and $A .",
    "local $NS $V the $T after the $A $N .", "the $T uses a $A $N to $B the $N .",
]


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _zipf(rng: random.Random, items: list[str]) -> str:
    # rank-weighted choice: frequent words repeat, as in real text, which a small LM can learn
    weights = [1.0 / (i + 1) for i in range(len(items))]
    return rng.choices(items, weights)[0]


class Lexicon:
    """The shared vocabulary: real English words plus seeded names, places and topic terms."""

    def __init__(self, seed: int, n_topics: int = 48, terms_per_topic: int = 24):
        rng = random.Random(f"{seed}:lexicon")
        self.first = sorted({self._word(rng, 2).capitalize() for _ in range(500)})
        self.last = sorted({self._word(rng, 3).capitalize() for _ in range(500)})
        self.places = sorted({self._word(rng, 2).capitalize() + rng.choice(PLACE_SUFFIXES) for _ in range(300)})
        terms = sorted({self._word(rng, 3) for _ in range(n_topics * terms_per_topic * 2)})
        rng.shuffle(terms)
        self.topics = [terms[i * terms_per_topic:(i + 1) * terms_per_topic] for i in range(n_topics)]

    @staticmethod
    def _word(rng: random.Random, n: int) -> str:
        return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, n)))

    def size(self) -> int:
        words = set(NOUNS) | set(ADJECTIVES) | {w for v in VERBS for w in v} | set(INTRANSITIVE) | set(ADVERBS)
        return len(words | set(self.first) | set(self.last) | set(self.places) | {t for ts in self.topics for t in ts})


class Prose:
    """Prose for one document: its topic, cast and places fixed, then sentences from templates."""

    def __init__(self, lex: Lexicon, rng: random.Random, style: str = "narrative"):
        self.rng = rng
        self.templates = NARRATIVE if style == "narrative" else EXPOSITORY
        self.terms = rng.choice(lex.topics)
        self.nouns = rng.sample(NOUNS, 40)
        self.adjs = rng.sample(ADJECTIVES, 30)
        self.verbs = rng.sample(VERBS, 20)
        self.intrans = rng.sample(INTRANSITIVE, 12)
        self.cast = [f"{rng.choice(lex.first)} {rng.choice(lex.last)}" for _ in range(rng.randint(3, 5))]
        self.short = [c.split()[0] for c in self.cast]
        self.places = rng.sample(lex.places, 3)

    def fill(self, slot: str) -> str:
        r = self.rng
        table = {
            "$N": lambda: _zipf(r, self.nouns), "$NS": lambda: _plural(_zipf(r, self.nouns)),
            "$A": lambda: _zipf(r, self.adjs), "$V": lambda: _zipf(r, self.verbs)[1],
            "$B": lambda: _zipf(r, self.verbs)[0], "$I": lambda: _zipf(r, self.intrans),
            "$D": lambda: r.choice(ADVERBS), "$T": lambda: _zipf(r, self.terms),
            "$C": lambda: r.choice(self.short) if r.random() < 0.7 else r.choice(self.cast),
            "$P": lambda: r.choice(self.places), "$NUM": lambda: r.choice(NUMBERS),
            "$Y": lambda: str(r.randint(1950, 2018)),
        }
        return table[slot]() if slot in table else slot

    def sentence(self) -> str:
        words = [self.fill(tok) for tok in self.rng.choice(self.templates).split()]
        return render(words)

    def paragraph(self, lo: int = 4, hi: int = 8) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(lo, hi)))

    def paragraphs(self, n_words: int) -> list[str]:
        out, count = [], 0
        while count < n_words:
            out.append(self.paragraph())
            count += len(out[-1].split())
        return out

    def title(self) -> str:
        words = [self.rng.choice(["The", "A"]), _zipf(self.rng, self.adjs), _zipf(self.rng, self.nouns)]
        if words[0] == "A" and words[1][0] in "aeiou":
            words[0] = "An"
        if self.rng.random() < 0.5:
            words += ["of", self.rng.choice(self.places)]
        return " ".join(w.capitalize() if w not in ("of",) else w for w in words)


def render(words: list[str]) -> str:
    """Join grammar tokens into a sentence: capitalise, attach punctuation, pair the quotes."""
    text, quote_open = "", False
    for w in words:
        if w in ".,;:!?":
            text += w
        elif w == '"':
            text += (" " if text else "") + '"' if not quote_open else '"'
            quote_open = not quote_open
        elif text.endswith('"') and quote_open:
            text += w
        else:
            if text.endswith((" a", '"a')) or text == "a":  # "a ancient" -> "an ancient"
                text += "n" if w[0] in "aeiou" else ""
            text += (" " if text else "") + w
    first = text.index(next(ch for ch in text if ch.isalpha()))
    return text[:first] + text[first].upper() + text[first + 1:]


# --- junk: what the quality classifier must learn to reject ------------------------------------
PRODUCTS = """watches pills loans casino bonus replica handbags sneakers viagra diet supplements crypto
followers likes insurance mortgage pharmacy perfume sunglasses jerseys ringtones""".split()
SPAM_PHRASES = ["buy cheap", "click here", "best price", "free shipping", "order now", "discount",
                "limited offer", "100% guaranteed", "lowest price", "top quality", "act now", "no prescription",
                "cheap", "online", "sale", "deal of the day", "wholesale", "visit our store"]
MENU = ["Home", "About", "Contact", "Blog", "Shop", "News", "Login", "Register", "Privacy Policy", "Terms of Use",
        "Sitemap", "FAQ", "Careers", "Advertise", "Help", "Subscribe", "Archive", "Categories", "Tags", "Search"]
COOKIE = ("We use cookies to improve your experience on our website. By continuing to browse the site "
          "you agree to our use of cookies. Accept all cookies or manage your preferences.")


def spam_text(rng: random.Random, n_words: int = 120) -> str:
    """Keyword-stuffed spam: 'buy cheap X click here best price' lists."""
    out = []
    while sum(len(s.split()) for s in out) < n_words:
        item = rng.choice(PRODUCTS)
        out.append(f"{rng.choice(SPAM_PHRASES)} {item} {rng.choice(SPAM_PHRASES)} {item}"
                   f"{rng.choice(['!', '!!', ' ...', ' $$$', ''])}")
    return " ".join(out)


def gibberish_text(rng: random.Random, n_words: int = 150) -> str:
    """Random character strings: what broken encodings and scraper junk look like."""
    letters = string.ascii_lowercase + string.digits
    return " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 11))) for _ in range(n_words))


def boilerplate_lines(rng: random.Random, site: str) -> list[str]:
    """Menus, cookie banner, copyright lines: page chrome with no main text."""
    lines = [" | ".join(rng.sample(MENU, 8)), COOKIE, " | ".join(rng.sample(MENU, 10))]
    lines += [f"Copyright {rng.randint(2005, 2019)} {site}. All rights reserved.",
              "Follow us on Facebook | Twitter | Instagram | Pinterest",
              "Sign up for our newsletter to get the latest updates. Enter your email address. Subscribe"]
    return lines


FRENCH = """le la les un une des de du et est dans pour que qui sur avec pas plus mais nous vous ils elle
il son sa ses leur tout comme cette ce sont fait bien aussi encore toujours jamais""".split()
FRENCH_WORDS = """maison ville rivière temps jour homme femme enfant chemin monde pays travail histoire
soir matin pain marché jardin fenêtre porte école livre lettre voiture montagne village famille ami
regarde mange parle trouve cherche attend porte ouvre ferme aime pense grand petit vieux nouveau beau
rouge blanc froid chaud calme long court""".split()
SPANISH = """el la los las un una de del y en que por para con no es son pero como muy más su sus este esta
lo al todo también siempre nunca cuando donde""".split()
SPANISH_WORDS = """casa ciudad río tiempo día hombre mujer niño camino mundo país trabajo historia noche
mañana pan mercado jardín ventana puerta escuela libro carta coche montaña pueblo familia amigo mira
come habla encuentra busca espera abre cierra piensa grande pequeño viejo nuevo bonito rojo blanco frío""".split()


def foreign_text(rng: random.Random, lang: str, n_words: int = 160) -> str:
    """Pseudo-French or pseudo-Spanish: real stopwords and words, so a language filter rejects it."""
    stop, words = (FRENCH, FRENCH_WORDS) if lang == "fr" else (SPANISH, SPANISH_WORDS)
    sentences, count = [], 0
    while count < n_words:
        toks = [rng.choice(stop if i % 2 == 0 else words) for i in range(rng.randint(7, 14))]
        sentences.append(" ".join(toks).capitalize() + ".")
        count += len(toks)
    return " ".join(sentences)


# --- eval-set text (a separate RNG stream in sample.py) -----------------------------------------
ACTIVITIES = """Cooking Gardening Sailing Painting Carpentry Fishing Baking Knitting Climbing Cycling
Pottery Photography Rowing Juggling Surfing Skiing Archery Weaving Beekeeping Woodcarving""".split()


def lambada_text(lex: Lexicon, rng: random.Random) -> str:
    """A LAMBADA-style passage (~60-100 words) whose last word (the target) appeared earlier."""
    p = Prose(lex, rng, "narrative")
    other = p.short[1]
    if rng.random() < 0.5:
        target = p.short[0]
        intro = f"{target} {p.fill('$V')} the {p.fill('$A')} {p.fill('$N')} before the {p.fill('$N')} {p.fill('$I')}."
        close = f"{other} {p.fill('$V')} the {p.fill('$N')}, and then {p.fill('$I')} {p.fill('$D')} next to {target}"
    else:
        target = p.fill("$N")
        intro = f"There was a {p.fill('$A')} {target} on the {p.fill('$N')} near {p.places[0]}."
        close = f"{other} {p.fill('$V')} the {p.fill('$A')} {p.fill('$N')} again, and {p.fill('$D')} found the {target}"
    body = [intro]
    while len(" ".join(body).split()) < rng.randint(50, 80):
        body.append(p.sentence())
    return " ".join(body + [close])


def wikitok(text: str) -> str:
    """WikiText raw tokenisation: punctuation split off by spaces (' , ' ' . ')."""
    for ch in '.,;:!?"':
        text = text.replace(ch, f" {ch} ")
    return " ".join(text.split())


def wiki_article(lex: Lexicon, rng: random.Random, n_paragraphs: int) -> tuple[str, list[tuple[str, str]]]:
    """A WikiText-style article: its title and (section heading or "", paragraph) pairs."""
    p = Prose(lex, rng, "expository")
    title = p.title()
    sections = ["", "History", "Description", "Reception", "Legacy", "Geography", "Design"]
    out = []
    for i in range(n_paragraphs):
        heading = sections[i] if i < len(sections) and i > 0 and rng.random() < 0.7 else ""
        out.append((heading, wikitok(p.paragraph(3, 6))))
    return title, out


def hellaswag_item(lex: Lexicon, rng: random.Random) -> tuple[str, str, str, str]:
    """(activity_label, ctx_a, ctx_b, gold ending): the ending continues ctx with its own cast/topic."""
    p = Prose(lex, rng, "narrative")
    who = p.short[0]
    term = p.fill("$T")  # the gold ending returns to the context's own object: coherent, predictable
    ctx_a = render(f"{who} is working on the {term} in a {p.fill('$A')} {p.fill('$N')} .".split()) + " " + p.sentence()
    ctx_b = f"after a while, {who}"
    gold = f"{p.fill('$V')} the {term} and then {p.fill('$V')} the {p.fill('$N')} next to the {p.fill('$T')}."
    return rng.choice(ACTIVITIES), ctx_a, ctx_b, gold
