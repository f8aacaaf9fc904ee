"""Alias normalization and name variants.

``normalize_alias`` maps surface forms that should find the same alias-table row to one key:
case, diacritics, punctuation and a leading "The" do not matter ("The Beatles", "beatles",
"BEATLES" -> ``beatles``; "Röntgen" -> ``rontgen``).

``name_variants`` derives the shorter names people use for an entity from its name: without a
parenthetical qualifier or a comma qualifier ("Victoria, Texas" -> "Victoria"), a person's
surname and given name ("Saddam Hussein" -> "Hussein", "Saddam"), and the acronym of a
multi-word name ("United Nations" -> "UN").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_PUNCT = re.compile(r"[^\w\s]", flags=re.UNICODE)
_DROPPED = re.compile(r"[.'’]")
_SPACES = re.compile(r"\s+")
_PAREN = re.compile(r"\s*\([^)]*\)\s*$")
_LEADING_ARTICLE = re.compile(r"^the\s+")
# The one list of words in names that are not names themselves (linking's only stopword list;
# BM25's analyzer has its own, part of an index's settings). Particles: articles, prepositions
# and nobiliary particles ("Hussein of Jordan", "Charles de Gaulle"); they are skipped in
# acronyms ("United Nations" -> "UN") and do not count as name words. Suffixes, normalized:
# generational suffixes ("Sammy Davis Jr.") and regnal numbers ("Elizabeth II"); a person's
# surname and given name are found without either. A regnal number still counts as a name word
# when names are compared ("Elizabeth II" is not "Elizabeth I").
NAME_PARTICLES = frozenset(
    {"a", "an", "and", "at", "de", "du", "for", "in", "la", "le", "of", "on", "the", "van", "von"}
)
GENERATIONAL_SUFFIXES = frozenset({"jr", "sr"})
NAME_SUFFIXES = GENERATIONAL_SUFFIXES | {"ii", "iii", "iv"}
NOT_NAME_WORDS = NAME_PARTICLES | GENERATIONAL_SUFFIXES
# The same suffixes as written in running text ("II", "XIV", "Jr.,"): upper-case Roman numerals
# only, so that a name such as "Xi" is not taken for one.
_SUFFIX_WORD = re.compile(r"^(?:[IVX]+|Jr|Sr)\.?,?$")

# Description cues that an entity is a person: Wikipedia first sentences say "(born ...)" or
# name an occupation. A cheap stand-in for a type field, used for surname/given-name variants.
_PERSON_CUES = re.compile(
    r"\((?:born|c\.|\d{3,4}\s*[-–])|\bborn\b|\b(?:actor|actress|singer|songwriter|rapper|musician|"
    r"guitarist|drummer|politician|president|senator|minister|player|footballer|cricketer|athlete|"
    r"coach|manager|writer|author|novelist|poet|journalist|painter|sculptor|architect|composer|"
    r"conductor|director|producer|businessman|businesswoman|entrepreneur|scientist|physicist|chemist|"
    r"mathematician|philosopher|economist|lawyer|judge|king|queen|prince|princess|emperor|pope|"
    r"bishop|general|officer|soldier|boxer|wrestler|golfer|model|comedian|dancer|television host|"
    r"astronaut|engineer|inventor|professor|activist|explorer|monarch|saint|prophet)\b",
    flags=re.IGNORECASE,
)
_PLACE_CUES = re.compile(
    r"\b(?:city|town|village|capital|country|state|province|county|region|island|river|mountain|"
    r"municipality|district|located|borough|lake|sea|ocean|peninsula|continent|republic|kingdom)\b",
    flags=re.IGNORECASE,
)
_ORG_CUES = re.compile(
    r"\b(?:company|corporation|organization|organisation|party|band|club|team|university|college|"
    r"agency|newspaper|network|association|institute|school|league|federation|group|union|"
    r"department|ministry|council|committee|bank|airline|manufacturer|broadcaster|magazine|"
    r"channel|church|army|navy|force)\b",
    flags=re.IGNORECASE,
)


def strip_diacritics(text: str) -> str:
    """Remove combining marks: "Röntgen" -> "Rontgen"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@lru_cache(maxsize=1 << 17)
def normalize_alias(text: str) -> str:
    """The lookup key of a surface form: casefolded, no diacritics, no punctuation, no leading "the".

    Memoized: linking and training ask for the same surfaces' keys many times.

    Example:
        >>> normalize_alias("The  Beatles!")
        'beatles'
        >>> normalize_alias("Al-Maliki")
        'al maliki'
        >>> normalize_alias("U.N.")
        'un'
    """
    key = strip_diacritics(text).casefold()
    key = _DROPPED.sub("", key)  # "U.N." -> "un", "O'Neil" -> "oneil"
    key = _PUNCT.sub(" ", key)
    key = _SPACES.sub(" ", key).strip()
    stripped = _LEADING_ARTICLE.sub("", key)
    return stripped or key


def tokens(text: str) -> list[str]:
    """Normalized word tokens of ``text``."""
    return normalize_alias(text).split()


def strip_qualifier(name: str) -> str:
    """The name without a trailing parenthetical or comma qualifier: "Paris, Texas" -> "Paris"."""
    base = _PAREN.sub("", name).strip()
    if "," in base:
        head = base.split(",", 1)[0].strip()
        if head:
            base = head
    return base or name


@lru_cache(maxsize=1 << 16)
def acronym(name: str) -> str | None:
    """Initials of the capitalized words of a multi-word name, if it has at least two of them."""
    words = [w for w in re.split(r"[\s\-]+", name) if w]
    letters = [w[0] for w in words if w[0].isupper() and w.casefold() not in NAME_PARTICLES]
    if len(letters) < 2 or len(letters) != len([w for w in words if w.casefold() not in NAME_PARTICLES]):
        return None
    return "".join(letters)


def is_name_suffix(word: str) -> bool:
    """True for a suffix or regnal number as written in text: "Jr.", "II", "XIV" (not "Xi", "Iv").

    Example:
        >>> [w for w in "John Paul II".split() if not is_name_suffix(w)]
        ['John', 'Paul']
    """
    return _SUFFIX_WORD.match(word) is not None


def guess_entity_type(description: str) -> str:
    """A coarse type from the description's wording: ``person``, ``place``, ``organization`` or ``other``.

    The first sentence of a Wikipedia article usually says what the entity is; a keyword cue is
    right often enough to serve as a feature and to decide which names get person variants.
    """
    head = description[:160]
    if _PERSON_CUES.search(head):
        return "person"
    if _ORG_CUES.search(head):
        return "organization"
    if _PLACE_CUES.search(head):
        return "place"
    return "other"


def name_variants(name: str, *, is_person: bool) -> set[str]:
    """Normalized keys of the shorter names an entity goes by (the full name's key included).

    Example:
        >>> sorted(name_variants("Saddam Hussein", is_person=True))
        ['hussein', 'saddam', 'saddam hussein']
    """
    variants = {normalize_alias(name)}
    base = strip_qualifier(name)
    variants.add(normalize_alias(base))
    acro = None if is_person else acronym(base)
    if acro is not None:
        variants.add(normalize_alias(acro))
    if is_person:
        words = [w for w in normalize_alias(base).split() if w not in NAME_SUFFIXES]
        if len(words) >= 2:
            variants.add(words[-1])
            variants.add(words[0])
            if len(words) >= 3:
                variants.add(f"{words[0]} {words[-1]}")
    return {v for v in variants if v}
