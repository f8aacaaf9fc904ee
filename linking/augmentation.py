"""Training-data augmentation: copies of benchmark documents with full person names cut to one name."""

from __future__ import annotations

import random
from collections.abc import Sequence

from linking.kb import KnowledgeBase
from linking.normalization import is_name_suffix, normalize_alias, strip_qualifier
from linking.types import GoldMention, LinkingDocument


def shorten_person_mentions(
    documents: Sequence[LinkingDocument], kb: KnowledgeBase, *, seed: int = 13
) -> list[LinkingDocument]:
    """Augmented copies of ``documents`` in which full person names are cut to one name.

    The training sets rarely call people by one name after naming them in full; other text often
    does ("Saddam" for Saddam Hussein). In each copy, every gold mention whose surface is a two-or-more-word name of a
    person entity is replaced in the text by its given name or its surname (one the alias table
    knows, if any, so the gold entity competes with that name's usual referents; else either, by
    a seeded draw), and the offsets shift accordingly. Initials, particles and suffixes are not
    names: "F. W. de Klerk" becomes "Klerk", "Elizabeth II" "Elizabeth". Documents without such a
    mention are left out.
    """
    rng = random.Random(seed)
    out = []
    for document in documents:
        pieces, mentions, cursor, shift, changed = [], [], 0, 0, False
        for gold in sorted(document.mentions, key=lambda g: g.start):
            surface = document.text[gold.start : gold.end]
            words = surface.split()
            replacement = surface
            if (
                gold.entity_id is not None
                and gold.entity_id in kb
                and kb.entity_type(gold.entity_id) == "person"
                and len(words) >= 2
                and normalize_alias(surface) == normalize_alias(strip_qualifier(kb.entity(gold.entity_id).name))
            ):
                # Prefer a short form the alias table knows, so that the gold entity competes with
                # that name's usual referents ("Hussein" -> Hussein of Jordan).
                # names only: not a suffix or regnal number ("John Paul II"), an initial or a
                # particle ("F. W. de Klerk")
                names = [w for w in words if w[:1].isupper() and len(w.rstrip(".")) > 1 and not is_name_suffix(w)]
                names = names or words
                known = [w for w in (names[0], names[-1]) if kb.has_exact_alias(w)]
                options = known if known else [names[0], names[-1]]
                replacement = options[0] if len(options) == 1 or rng.random() < 0.5 else options[1]
                changed = True
            pieces.append(document.text[cursor : gold.start])
            pieces.append(replacement)
            start = gold.start + shift
            mentions.append(GoldMention(start, start + len(replacement), replacement, gold.entity_id))
            shift += len(replacement) - (gold.end - gold.start)
            cursor = gold.end
        if changed:
            pieces.append(document.text[cursor:])
            out.append(LinkingDocument(f"{document.doc_id}#short", "".join(pieces), tuple(mentions)))
    return out
