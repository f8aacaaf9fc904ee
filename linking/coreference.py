"""In-document coreference: shorter mentions inherit the entity of a longer mention they abbreviate.

News names a person in full once ("Saddam Hussein") and then by one name ("Saddam", "Hussein");
an organization once in full ("United Nations") and then by acronym ("UN"). Taken alone, the
short form's prior often points elsewhere ("Hussein" -> Hussein of Jordan). This stage gives a
short mention the entity linked for a longer mention of the same document when

* the short form's words are a proper subset of the long form's words, or it is the long
  form's acronym, and
* the short form is a name variant of that entity in the KB (its surname, given name,
  acronym, or alias) — so "Washington" does not inherit "The Washington Post".

Among several long forms the longest wins, then the nearest one before the mention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from linking.kb import KnowledgeBase
from linking.normalization import acronym, normalize_alias
from linking.types import Candidate, Link


def propagate_entities(links: Sequence[Link], kb: KnowledgeBase) -> list[Link]:
    """Return ``links`` with coreferent short mentions relinked to their long form's entity."""
    keys = [normalize_alias(link.mention.surface) for link in links]
    words = [set(k.split()) for k in keys]
    acronyms = [normalize_alias(acronym(link.mention.surface) or "") for link in links]
    out = list(links)
    for i, link in enumerate(links):
        if not keys[i]:
            continue
        best: tuple[int, int, int] | None = None  # (words, -distance, j)
        for j, other in enumerate(links):
            if j == i or other.entity_id is None or other.coreferent:
                continue
            subset = len(words[j]) > len(words[i]) and words[i] < words[j]
            is_acronym = acronyms[j] != "" and keys[i] == acronyms[j]
            if not (subset or is_acronym):
                continue
            if other.entity_id not in kb.variant_lookup(link.mention.surface):
                continue
            distance = abs(link.mention.start - other.mention.start) + (
                0 if other.mention.start < link.mention.start else 10**6
            )
            rank = (len(words[j]), -distance, j)
            if best is None or rank > best:
                best = rank
        if best is None:
            continue
        source = links[best[2]]
        entity_id = source.entity_id
        if entity_id is None or entity_id == link.entity_id:  # None never: NIL links are not sources
            continue
        candidates = link.candidates
        if entity_id not in {c.entity_id for c in candidates}:
            candidates = (Candidate(entity_id=entity_id, sources=("coreference",), score=source.score), *candidates)
        out[i] = replace(link, entity_id=entity_id, score=source.score, candidates=candidates, coreferent=True)
    return out
