from __future__ import annotations

from linking.context import mention_contexts, sentence_spans
from linking.types import Mention


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


def test_sentences_split_at_terminal_punctuation_and_line_breaks() -> None:
    text = 'He said "Go." Then Paris fell!  Was it 1999? Yes\nNext line'
    assert sentences(text) == ['He said "Go."', "Then Paris fell!", "Was it 1999?", "Yes", "Next line"]


def test_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    text = "Mr. Smith met Gen. Jones in the U.S. Senate. George W. Bush spoke."
    assert sentences(text) == ["Mr. Smith met Gen. Jones in the U.S. Senate.", "George W. Bush spoke."]


def test_mentions_of_one_sentence_share_one_text() -> None:
    text = "Paris met Michael Jordan in Paris. Then Jordan left."
    mentions = [Mention(0, 5, "Paris"), Mention(10, 24, "Michael Jordan"), Mention(28, 33, "Paris")]
    contexts = mention_contexts(text, [*mentions, Mention(40, 46, "Jordan")])
    assert contexts.texts == ("Paris met Michael Jordan in Paris.", "Then Jordan left.")
    assert contexts.rows == (0, 0, 0, 1)


def test_a_long_sentence_is_cut_around_the_mention() -> None:
    text = "word " * 200 + "Paris " + "word " * 200
    start = text.index("Paris")
    contexts = mention_contexts(text, [Mention(start, start + 5, "Paris")], max_chars=100)
    assert len(contexts.texts[0]) <= 100 and "Paris" in contexts.texts[0]
