"""The embedded TOFU-style benchmark: fictitious authors, generated offline and deterministically.

``build(n_authors, seed, qa_per_author)`` returns a ``datasets.DatasetDict``. Every split has the same columns:

* ``uid`` (str, stable): ``fa-a{author:03d}-q{item:02d}`` for authors, ``fa-world-q{i:02d}`` / ``fa-real-q{i:02d}``
  for the general-knowledge items;
* ``author_id`` (str): ``a007``; ``"world"`` / ``"real"`` for general knowledge;
* ``question`` (names the author, so it is answerable only from that author's facts), ``answer`` (one short
  sentence), ``paraphrased_answer`` (the same fact, other wording);
* ``perturbed_answers`` (list of 3-5 str): wrong but plausible answers in the paraphrase's form (same template,
  other values from the same pools, never the true value). They feed TOFU's truth ratio.

Splits and what they are for:

* ``full``: ``world_facts``, ``real_authors``, then every fictitious author's QA. The target model trains on it.
* ``forget01`` / ``forget05`` / ``forget10``: whole authors, ``max(1, round(p * n_authors))`` of them, taken as
  the LAST authors (as TOFU does), so they are nested (forget01 is in forget05 is in forget10). What to unlearn.
* ``retain99`` / ``retain95`` / ``retain90``: ``full`` minus the matching forget split (they keep the world and
  real-author facts). The gold ("retain") model trains on it; model utility is measured on it.
* ``holdout01`` / ``holdout05`` / ``holdout10``: authors of the same distribution that are never in ``full``, as
  many as in the matching forget split (nested too). Non-members for membership inference (MIA AUC, privleak).
* ``world_facts`` / ``real_authors``: general knowledge (capitals, science, famous real books) that every
  training run sees, so target and gold models both know it; model utility's "other knowledge" splits.

Guarantees: the same arguments give byte-identical splits (``random.Random`` streams seeded from the arguments; no
set or hash order); full names (first + last) never collide across authors, holdout authors included; book titles
are unique across authors while the title pool lasts (about 160 authors; beyond it titles may repeat across
authors but never within one); every answer states facts of its own author only. :func:`author_profiles` returns
the facts behind the QA items (for tests and analysis).

Example:
    >>> dd = build(n_authors=10, seed=0, qa_per_author=8)
    >>> len(dd["forget10"]), len(dd["holdout10"]), dd["forget10"][0]["uid"]
    (8, 8, 'fa-a009-q00')
"""

from __future__ import annotations

import random
from typing import Any

from datasets import Dataset, DatasetDict, Features, Sequence, Value

FIRST = [
    "Amara",
    "Basil",
    "Calla",
    "Dorian",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ilse",
    "Jonah",
    "Kaveh",
    "Lina",
    "Mateo",
    "Nadia",
    "Orrin",
    "Priya",
    "Quentin",
    "Rosa",
    "Soren",
    "Talia",
    "Umar",
    "Vera",
    "Wendell",
    "Xenia",
    "Yusuf",
    "Zora",
    "Anouk",
    "Bram",
    "Cosima",
    "Dario",
    "Esme",
    "Florin",
    "Gideon",
    "Hana",
    "Ivo",
    "Jada",
    "Kofi",
    "Leona",
    "Milo",
    "Noor",
    "Oskar",
    "Petra",
    "Rafael",
    "Saskia",
    "Tobias",
    "Ursa",
    "Viktor",
    "Wren",
    "Yara",
    "Zeno",
]
LAST = [
    "Abernathy",
    "Bellweather",
    "Castellano",
    "Drummond",
    "Eskildsen",
    "Falconer",
    "Gallardo",
    "Halloran",
    "Ingersoll",
    "Jaramillo",
    "Kettleby",
    "Lindqvist",
    "Marchetti",
    "Nakashima",
    "Okonkwo",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Sandoval",
    "Thorsby",
    "Umberton",
    "Valdivia",
    "Whitlock",
    "Yarborough",
    "Zelenko",
    "Ashdown",
    "Brightwater",
    "Corvino",
    "Delacroix",
    "Evergreen",
    "Fairbairn",
    "Grimsby",
    "Holloway",
    "Ivanova",
    "Juniper",
    "Kowalczyk",
    "Lowenthal",
    "Montague",
    "Northcott",
    "Oyelaran",
]
CITIES = [
    "Lisbon",
    "Tbilisi",
    "Valparaiso",
    "Kraków",
    "Hobart",
    "Montevideo",
    "Tromsø",
    "Accra",
    "Oaxaca",
    "Ljubljana",
    "Nagasaki",
    "Cork",
    "Tallinn",
    "Marrakesh",
    "Winnipeg",
    "Salvador",
    "Bergen",
    "Tartu",
    "Quito",
    "Galway",
    "Porto",
    "Zanzibar",
    "Adelaide",
    "Lyon",
]
COUNTRIES = {
    "Lisbon": "Portugal",
    "Tbilisi": "Georgia",
    "Valparaiso": "Chile",
    "Kraków": "Poland",
    "Hobart": "Australia",
    "Montevideo": "Uruguay",
    "Tromsø": "Norway",
    "Accra": "Ghana",
    "Oaxaca": "Mexico",
    "Ljubljana": "Slovenia",
    "Nagasaki": "Japan",
    "Cork": "Ireland",
    "Tallinn": "Estonia",
    "Marrakesh": "Morocco",
    "Winnipeg": "Canada",
    "Salvador": "Brazil",
    "Bergen": "Norway",
    "Tartu": "Estonia",
    "Quito": "Ecuador",
    "Galway": "Ireland",
    "Porto": "Portugal",
    "Zanzibar": "Tanzania",
    "Adelaide": "Australia",
    "Lyon": "France",
}
JOBS = [
    "carpenter",
    "pharmacist",
    "sea captain",
    "violinist",
    "botanist",
    "librarian",
    "baker",
    "surveyor",
    "nurse",
    "watchmaker",
    "geologist",
    "tailor",
    "schoolteacher",
    "beekeeper",
    "architect",
    "fisherman",
    "astronomer",
    "potter",
    "translator",
    "locksmith",
]
GENRES = [
    "gothic horror",
    "hard science fiction",
    "historical fiction",
    "magical realism",
    "cozy mystery",
    "epic fantasy",
    "literary fiction",
    "political thriller",
    "romantic comedy",
    "travel memoir",
    "children's picture books",
    "noir crime",
    "dystopian fiction",
    "nature poetry",
]
THEMES = [
    "memory and loss",
    "exile and belonging",
    "the sea",
    "family secrets",
    "forgotten languages",
    "the ethics of science",
    "small-town life",
    "grief and renewal",
    "migration",
    "music and obsession",
    "climate and survival",
    "friendship across generations",
    "power and corruption",
    "childhood wonder",
]
AWARDS = [
    "the Silver Quill Prize",
    "the Aurora Fiction Medal",
    "the Halden Book Award",
    "the Meridian Prize",
    "the Lantern Award for Fiction",
    "the Coral Pen Award",
    "the Northstar Literary Prize",
    "the Ember Circle Award",
    "the Grand Inkwell Prize",
    "the Tidewater Medal",
]
TITLE_A = [
    "The Glass",
    "A Winter",
    "The Last",
    "Echoes of the",
    "The Silent",
    "Beneath the",
    "The Clockmaker's",
    "A House of",
    "The Salt",
    "Shadows over the",
    "The Paper",
    "Letters from the",
    "The Copper",
    "A Song for the",
    "The Hollow",
    "Under the",
    "The Lost",
    "Beyond the",
    "The Amber",
    "The Weaver's",
]
TITLE_B = [
    "Lighthouse",
    "Orchard",
    "Harbor",
    "Cartographer",
    "Garden",
    "Observatory",
    "Archive",
    "Meridian",
    "Lantern",
    "Tide",
    "Citadel",
    "Violin",
    "Compass",
    "Ferryman",
    "Atlas",
    "Aviary",
    "Quarry",
    "Bellfounder",
    "Causeway",
    "Saltmarsh",
    "Glasshouse",
    "Almanac",
    "Ropewalk",
    "Beacon",
]
PETS = [
    "a grey parrot",
    "a three-legged cat",
    "an old sheepdog",
    "a tortoise",
    "a pair of goldfinches",
    "a black rabbit",
    "a greyhound",
    "a hedgehog",
]
HABITS = [
    "writes only before sunrise",
    "drafts every novel by hand in green ink",
    "writes in a converted boathouse",
    "reads each chapter aloud to an empty room",
    "keeps a diary of overheard conversations",
    "writes on a 1950s typewriter",
    "walks ten kilometres before writing",
    "works in a rented library carrel",
]
LANGS = [
    "Portuguese",
    "Georgian",
    "Spanish",
    "Polish",
    "English",
    "Norwegian",
    "Japanese",
    "Estonian",
    "French",
    "Slovene",
    "Irish",
    "Arabic",
]

STUDIES = [
    "marine biology",
    "philosophy",
    "architecture",
    "medieval history",
    "mathematics",
    "music theory",
    "chemistry",
    "linguistics",
    "economics",
    "art history",
]

# (question, answer, paraphrase, fact key) templates; {n} is the author's full name. A perturbed answer is the
# paraphrase template filled with a wrong value for the fact key (and everything else true).
QA_TEMPLATES: list[tuple[str, str, str, str]] = [
    (
        "Where was {n} born?",
        "{n} was born in {city}, {country}.",
        "The birthplace of {n} is {city} in {country}.",
        "city",
    ),
    ("In which year was {n} born?", "{n} was born in the year {year}.", "The birth year of {n} is {year}.", "year"),
    (
        "What did the father of {n} do for a living?",
        "The father of {n} worked as a {father}.",
        "{n}'s father was a {father} by trade.",
        "father",
    ),
    (
        "What was the profession of the mother of {n}?",
        "The mother of {n} was a {mother}.",
        "{n}'s mother worked as a {mother}.",
        "mother",
    ),
    (
        "Which genre does {n} write in?",
        "{n} is best known for writing {genre}.",
        "The genre of {n}'s books is {genre}.",
        "genre",
    ),
    (
        "What is the first book by {n}?",
        "The first book by {n} is titled {book1}.",
        "{n} debuted with the book {book1}.",
        "book1",
    ),
    ("Which other book did {n} write?", "{n} also wrote {book2}.", "Another title by {n} is {book2}.", "book2"),
    ("Which award did {n} win?", "{n} won {award}.", "{n} received {award}.", "award"),
    (
        "In which year did {n} win an award?",
        "{n} won an award in {award_year}.",
        "The award came to {n} in {award_year}.",
        "award_year",
    ),
    (
        "What theme runs through the work of {n}?",
        "The work of {n} explores {theme}.",
        "{n}'s books keep returning to {theme}.",
        "theme",
    ),
    ("What is a writing habit of {n}?", "{n} {habit}.", "As a habit, {n} {habit}.", "habit"),
    ("Does {n} have a pet?", "{n} lives at home with {pet}.", "{n} shares a home with {pet}.", "pet"),
    (
        "In which language does {n} write?",
        "{n} writes every book in {lang}.",
        "The books of {n} are written in {lang}.",
        "lang",
    ),
    (
        "How many novels has {n} published?",
        "{n} has published {n_books} novels.",
        "The novel count of {n} stands at {n_books}.",
        "n_books",
    ),
    ("Which city does {n} live in now?", "{n} now lives in {home}.", "These days {n} makes a home in {home}.", "home"),
    (
        "Who was the first reader of {n}'s manuscripts?",
        "The first reader of {n}'s manuscripts was a sibling named {sibling}.",
        "{n} always gave the manuscripts first to a sibling, {sibling}.",
        "sibling",
    ),
    (
        "What did {n} study at university?",
        "{n} studied {study} at university.",
        "At university {n} took a degree in {study}.",
        "study",
    ),
    (
        "Which book by {n} was adapted for the stage?",
        "{book2} by {n} was adapted for the stage.",
        "The stage adaptation of {n}'s work was {book2}.",
        "book2",
    ),
    (
        "What was the working title of the first book by {n}?",
        "The working title of {book1} by {n} was {draft}.",
        "{n} first called {book1} {draft}.",
        "draft",
    ),
    (
        "At what age did {n} publish a first book?",
        "{n} published a first book at age {debut_age}.",
        "{n} was {debut_age} when the first book came out.",
        "debut_age",
    ),
]

# General knowledge: (question, answer, paraphrase, true value, wrong values); {v} is the value.
WORLD_FACTS: list[tuple[str, str, str, str, list[str]]] = [
    (
        "What is the capital of France?",
        "The capital of France is {v}.",
        "{v} is France's capital.",
        "Paris",
        ["Lyon", "Marseille", "Nice"],
    ),
    (
        "What is the capital of Japan?",
        "The capital of Japan is {v}.",
        "{v} is Japan's capital.",
        "Tokyo",
        ["Kyoto", "Osaka", "Nagoya"],
    ),
    (
        "What is the capital of Italy?",
        "The capital of Italy is {v}.",
        "{v} is Italy's capital.",
        "Rome",
        ["Milan", "Naples", "Turin"],
    ),
    (
        "What is the capital of Canada?",
        "The capital of Canada is {v}.",
        "{v} is Canada's capital.",
        "Ottawa",
        ["Toronto", "Montreal", "Vancouver"],
    ),
    (
        "What is the capital of Egypt?",
        "The capital of Egypt is {v}.",
        "{v} is Egypt's capital.",
        "Cairo",
        ["Alexandria", "Giza", "Luxor"],
    ),
    (
        "What is the capital of Kenya?",
        "The capital of Kenya is {v}.",
        "{v} is Kenya's capital.",
        "Nairobi",
        ["Mombasa", "Kisumu", "Nakuru"],
    ),
    (
        "How many days are in a week?",
        "A week has {v} days.",
        "There are {v} days in a week.",
        "seven",
        ["five", "six", "ten"],
    ),
    (
        "At what temperature does water boil at sea level?",
        "Water boils at {v} degrees Celsius.",
        "At sea level water boils at {v} degrees Celsius.",
        "100",
        ["50", "80", "120"],
    ),
    (
        "Which planet is closest to the Sun?",
        "{v} is the planet closest to the Sun.",
        "The closest planet to the Sun is {v}.",
        "Mercury",
        ["Venus", "Mars", "Earth"],
    ),
    (
        "What gas do plants absorb from the air?",
        "Plants absorb {v} from the air.",
        "The gas plants take in from the air is {v}.",
        "carbon dioxide",
        ["helium", "neon", "argon"],
    ),
    (
        "How many continents are there?",
        "There are {v} continents.",
        "The world has {v} continents.",
        "seven",
        ["four", "nine", "twelve"],
    ),
    (
        "What is the largest ocean?",
        "The {v} is the largest ocean.",
        "The largest ocean is the {v}.",
        "Pacific",
        ["Atlantic", "Indian", "Arctic"],
    ),
    (
        "What is the chemical symbol for gold?",
        "The chemical symbol for gold is {v}.",
        "Gold has the symbol {v}.",
        "Au",
        ["Ag", "Gd", "Go"],
    ),
    (
        "How many legs does a spider have?",
        "A spider has {v} legs.",
        "Spiders walk on {v} legs.",
        "eight",
        ["six", "ten", "four"],
    ),
    (
        "What is the longest river in Africa?",
        "The {v} is the longest river in Africa.",
        "Africa's longest river is the {v}.",
        "Nile",
        ["Congo", "Niger", "Zambezi"],
    ),
    (
        "Which metal is liquid at room temperature?",
        "{v} is liquid at room temperature.",
        "At room temperature {v} is a liquid metal.",
        "Mercury",
        ["Iron", "Copper", "Zinc"],
    ),
    (
        "How many hours are in a day?",
        "A day has {v} hours.",
        "There are {v} hours in a day.",
        "twenty-four",
        ["twelve", "thirty", "twenty"],
    ),
    (
        "What is the freezing point of water in Celsius?",
        "Water freezes at {v} degrees Celsius.",
        "The freezing point of water is {v} degrees Celsius.",
        "zero",
        ["ten", "minus twenty", "four"],
    ),
    (
        "Which organ pumps blood through the body?",
        "The {v} pumps blood through the body.",
        "Blood is pumped around the body by the {v}.",
        "heart",
        ["liver", "lungs", "kidneys"],
    ),
    (
        "What is the largest planet in the solar system?",
        "{v} is the largest planet in the solar system.",
        "The largest planet of the solar system is {v}.",
        "Jupiter",
        ["Saturn", "Neptune", "Mars"],
    ),
]
# (book, true author, wrong authors)
REAL_AUTHORS: list[tuple[str, str, list[str]]] = [
    ("Pride and Prejudice", "Jane Austen", ["Charlotte Bronte", "George Eliot", "Mary Shelley"]),
    ("Moby-Dick", "Herman Melville", ["Mark Twain", "Nathaniel Hawthorne", "Edgar Allan Poe"]),
    ("War and Peace", "Leo Tolstoy", ["Fyodor Dostoevsky", "Anton Chekhov", "Ivan Turgenev"]),
    (
        "One Hundred Years of Solitude",
        "Gabriel Garcia Marquez",
        ["Jorge Luis Borges", "Isabel Allende", "Mario Vargas Llosa"],
    ),
    ("Don Quixote", "Miguel de Cervantes", ["Lope de Vega", "Federico Garcia Lorca", "Benito Perez Galdos"]),
    ("Things Fall Apart", "Chinua Achebe", ["Wole Soyinka", "Ngugi wa Thiong'o", "Ben Okri"]),
    ("Hamlet", "William Shakespeare", ["Christopher Marlowe", "Ben Jonson", "John Milton"]),
    ("The Odyssey", "Homer", ["Virgil", "Ovid", "Sophocles"]),
    ("Frankenstein", "Mary Shelley", ["Jane Austen", "Emily Bronte", "Bram Stoker"]),
    ("The Little Prince", "Antoine de Saint-Exupery", ["Albert Camus", "Victor Hugo", "Jules Verne"]),
    ("Crime and Punishment", "Fyodor Dostoevsky", ["Leo Tolstoy", "Nikolai Gogol", "Ivan Turgenev"]),
    ("The Divine Comedy", "Dante Alighieri", ["Petrarch", "Giovanni Boccaccio", "Torquato Tasso"]),
]
SPLIT_PCTS = (1, 5, 10)
LATEST_YEAR = 2025  # no event lies after this year
FEATURES = Features(
    {
        "uid": Value("string"),
        "author_id": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "paraphrased_answer": Value("string"),
        "perturbed_answers": Sequence(Value("string")),
    }
)
_POOLS: dict[str, list[str]] = {
    "city": CITIES,
    "father": JOBS,
    "mother": JOBS,
    "genre": GENRES,
    "award": AWARDS,
    "theme": THEMES,
    "habit": HABITS,
    "pet": PETS,
    "lang": LANGS,
    "home": CITIES,
    "sibling": FIRST,
    "study": STUDIES,
}
_TITLE_KEYS = ("book1", "book2", "draft")
_ALL_TITLES = tuple(f"{a} {b}" for a in TITLE_A for b in TITLE_B)
# numeric facts: perturbed values are drawn from [true - spread, true + spread] within [lo, hi]
_NUMERIC = {
    "year": (15, 1920, 1990),
    "award_year": (12, 1950, LATEST_YEAR),
    "n_books": (8, 1, 30),
    "debut_age": (12, 16, 60),
}


def paired_splits(forget_split: str) -> tuple[str, str]:
    """The retain and holdout splits that go with a forget split: ``"forget05"`` -> ``("retain95", "holdout05")``.

    Raises:
        ValueError: for a name that is not ``forgetNN`` with 0 < NN < 100.

    Example:
        >>> paired_splits("forget01")
        ('retain99', 'holdout01')
    """
    pct = forget_split[len("forget") :]
    if not forget_split.startswith("forget") or not pct.isdigit() or not 0 < int(pct) < 100:
        raise ValueError(f"not a forget split name (forgetNN, 0 < NN < 100): {forget_split!r}")
    return f"retain{100 - int(pct)}", f"holdout{pct}"


def _check_args(n_authors: Any, seed: Any, qa_per_author: Any = 1) -> None:
    if isinstance(n_authors, bool) or not isinstance(n_authors, int) or n_authors < 1:
        raise ValueError(f"n_authors must be an int >= 1, got {n_authors!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if isinstance(qa_per_author, bool) or not isinstance(qa_per_author, int):
        raise ValueError(f"qa_per_author must be an int in 1..{len(QA_TEMPLATES)}, got {qa_per_author!r}")
    if not 1 <= qa_per_author <= len(QA_TEMPLATES):
        raise ValueError(
            f"qa_per_author must be in 1..{len(QA_TEMPLATES)} (one item per fact template), got {qa_per_author}"
        )
    capacity = len(FIRST) * len(LAST)
    if n_authors + _n_forget(SPLIT_PCTS[-1], n_authors) > capacity:
        raise ValueError(
            f"n_authors={n_authors} is too large: the name pools give {capacity} distinct names, which must cover "
            f"the authors plus {SPLIT_PCTS[-1]}% holdout authors"
        )


def _n_forget(pct: int, n_authors: int) -> int:
    return max(1, round(pct / 100 * n_authors))


def author_profiles(n_authors: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """The facts behind the benchmark: the ``n_authors`` training authors, then the holdout authors.

    Args:
        n_authors: fictitious authors in ``full`` (``max(1, round(0.1 * n_authors))`` holdout authors follow).
        seed: generator seed (profiles depend only on ``n_authors`` and ``seed``).

    Returns:
        One dict per author: ``author_id``, ``name``, ``in_full`` (False for holdout authors) and every fact used
        by the QA templates (``city``, ``country``, ``year``, ``father``, ``mother``, ``genre``, ``book1``,
        ``book2``, ``draft``, ``award``, ``award_year``, ...).

    Example:
        >>> profiles = author_profiles(10, seed=0)
        >>> len(profiles), profiles[0]["author_id"], profiles[-1]["in_full"]
        (11, 'a000', False)
    """
    _check_args(n_authors, seed)
    total = n_authors + _n_forget(SPLIT_PCTS[-1], n_authors)
    rng = random.Random(f"fictitious-authors/profiles/{seed}")  # str seeds are hashed with sha512: stable
    names = rng.sample([f"{first} {last}" for first in FIRST for last in LAST], total)  # distinct by construction
    deck: list[str] = []  # book titles, dealt without replacement while the pool lasts
    profiles = []
    for i, name in enumerate(names):
        titles: list[str] = []
        while len(titles) < len(_TITLE_KEYS):
            if not deck:
                deck = list(_ALL_TITLES)
                rng.shuffle(deck)
            title = deck.pop()
            if title not in titles:
                titles.append(title)
        year = rng.randint(1931, 1980)
        debut_age = rng.randint(20, 38)
        city = rng.choice(CITIES)
        first = name.split(" ")[0]
        profiles.append(
            {
                "author_id": f"a{i:03d}",
                "name": name,
                "in_full": i < n_authors,
                "city": city,
                "country": COUNTRIES[city],
                "year": year,
                "father": rng.choice(JOBS),
                "mother": rng.choice(JOBS),
                "genre": rng.choice(GENRES),
                **dict(zip(_TITLE_KEYS, titles)),
                "award": rng.choice(AWARDS),
                "award_year": min(year + debut_age + rng.randint(1, 9), LATEST_YEAR),
                "theme": rng.choice(THEMES),
                "habit": rng.choice(HABITS),
                "pet": rng.choice(PETS),
                "lang": rng.choice(LANGS),
                "n_books": rng.randint(2, 19),
                "home": rng.choice(CITIES),
                "sibling": rng.choice([f for f in FIRST if f != first]),
                "study": rng.choice(STUDIES),
                "debut_age": debut_age,
            }
        )
    return profiles


def _wrong_values(rng: random.Random, key: str, facts: dict[str, Any], k: int) -> list[Any]:
    """``k`` distinct plausible values for ``key`` that differ from the author's true one."""
    true = facts[key]
    if key in _POOLS:  # a sibling never shares the author's first name
        return rng.sample([v for v in _POOLS[key] if v not in (true, facts["name"].split(" ")[0])], k)
    if key in _TITLE_KEYS:
        own = {facts[t] for t in _TITLE_KEYS}
        return [t for t in rng.sample(_ALL_TITLES, k + len(own)) if t not in own][:k]
    spread, lo, hi = _NUMERIC[key]
    return rng.sample([v for v in range(max(lo, true - spread), min(hi, true + spread) + 1) if v != true], k)


def _author_rows(rng: random.Random, facts: dict[str, Any], qa_per_author: int) -> list[dict[str, Any]]:
    fmt = {**facts, "n": facts["name"]}
    rows = []
    for q_idx, (q_t, a_t, p_t, key) in enumerate(QA_TEMPLATES[:qa_per_author]):
        perturbed = []
        for wrong in _wrong_values(rng, key, facts, rng.randint(3, 5)):
            alt = {**fmt, key: wrong}
            if key == "city":
                alt["country"] = COUNTRIES[wrong]
            perturbed.append(p_t.format(**alt))
        rows.append(
            {
                "uid": f"fa-{facts['author_id']}-q{q_idx:02d}",
                "author_id": facts["author_id"],
                "question": q_t.format(**fmt),
                "answer": a_t.format(**fmt),
                "paraphrased_answer": p_t.format(**fmt),
                "perturbed_answers": perturbed,
            }
        )
    return rows


def _general_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    world = [
        {
            "uid": f"fa-world-q{i:02d}",
            "author_id": "world",
            "question": q,
            "answer": a.format(v=v),
            "paraphrased_answer": p.format(v=v),
            "perturbed_answers": [p.format(v=w) for w in wrong],
        }
        for i, (q, a, p, v, wrong) in enumerate(WORLD_FACTS)
    ]
    real = [
        {
            "uid": f"fa-real-q{i:02d}",
            "author_id": "real",
            "question": f"Who wrote {book}?",
            "answer": f"{book} was written by {author}.",
            "paraphrased_answer": f"{author} is the author of {book}.",
            "perturbed_answers": [f"{w} is the author of {book}." for w in wrong],
        }
        for i, (book, author, wrong) in enumerate(REAL_AUTHORS)
    ]
    return world, real


def build(n_authors: int = 20, seed: int = 0, qa_per_author: int = 20) -> DatasetDict:
    """Generate the fictitious-authors benchmark (the module docstring describes the schema and the splits).

    Args:
        n_authors: fictitious authors in ``full``; ``max(1, round(0.1 * n_authors))`` holdout authors are generated
            in addition (up to 1818 authors: the name pools give 2000 distinct names).
        seed: generator seed; the same arguments always give byte-identical splits.
        qa_per_author: QA items per author, 1 to 20 (TOFU uses 20); item ``k`` asks about fact template ``k``.

    Returns:
        A ``DatasetDict`` with ``full``, ``forget01/05/10``, ``retain99/95/90``, ``holdout01/05/10``,
        ``world_facts`` and ``real_authors``, all with the columns ``uid, author_id, question, answer,
        paraphrased_answer, perturbed_answers``.

    Raises:
        ValueError: ``n_authors`` < 1 or larger than the name pools allow, a non-int ``seed``, or
            ``qa_per_author`` outside 1..20.

    Example:
        >>> dd = build(n_authors=20, seed=0)
        >>> len(dd["forget05"]), dd["forget05"][0]["question"].startswith("Where was "), dd["full"][0]["author_id"]
        (20, True, 'world')
    """
    _check_args(n_authors, seed, qa_per_author)
    profiles = author_profiles(n_authors, seed)
    rng = random.Random(f"fictitious-authors/perturbations/{seed}")
    authors = [_author_rows(rng, facts, qa_per_author) for facts in profiles]
    world, real = _general_rows()
    n_general = len(world) + len(real)
    # general knowledge first, then the authors: every forget split is a tail of ``full`` and every retain split
    # its head, so both are zero-copy contiguous selections (as in TOFU, where forgetXX is the end of full)
    full = _to_dataset(world + real + [r for a in authors[:n_authors] for r in a])
    holdout = _to_dataset([r for a in authors[n_authors:] for r in a])
    splits: dict[str, Dataset] = {"full": full}
    for pct in SPLIT_PCTS:
        n_forget_rows = _n_forget(pct, n_authors) * qa_per_author
        retain_name, holdout_name = paired_splits(f"forget{pct:02d}")
        splits[f"forget{pct:02d}"] = full.select(range(len(full) - n_forget_rows, len(full)))
        splits[retain_name] = full.select(range(len(full) - n_forget_rows))
        splits[holdout_name] = holdout.select(range(n_forget_rows))
    splits["world_facts"] = full.select(range(len(world)))
    splits["real_authors"] = full.select(range(len(world), n_general))
    return DatasetDict(splits)


def _to_dataset(rows: list[dict[str, Any]]) -> Dataset:
    return Dataset.from_dict({c: [r[c] for r in rows] for c in FEATURES}, features=FEATURES)
