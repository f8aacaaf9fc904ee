"""``SleuthClient.link`` and ``sleuth link --target`` against a real server on port 0 (tiny KB, fake encoder)."""

from __future__ import annotations

import json

import grpc
import pytest

from service.cli import main
from service.client import SleuthClient


def test_client_links_given_spans_and_detected_mentions(linking_server: str) -> None:
    with SleuthClient(linking_server) as client:
        given = client.link("Michael Jordan starred in Creed, a film.", mentions=[(0, 14)], top_candidates=3)
        [mention] = given.mentions
        assert (mention.surface, mention.entity_id, mention.nil) == ("Michael Jordan", "Michael B. Jordan", False)
        assert len(mention.candidates) == 3
        assert (given.kb_version, given.model_version) == ("kb@tiny", "linker@tiny")
        detected = client.link("Yesterday Michael Jordan visited Paris.", top_candidates=0, include_nil=False)
        assert {m.surface for m in detected.mentions} >= {"Michael Jordan", "Paris"}
        assert all(not m.candidates and not m.nil for m in detected.mentions)
        with pytest.raises(grpc.RpcError) as info:
            client.link("Paris", mentions=[(2, 40)])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("mentions[0]")


def test_link_command_on_a_server_prints_what_a_local_link_prints(linking_server: str, capsys) -> None:
    assert (
        main(["link", "--target", linking_server, "--json", "--top", "2", "Yesterday Michael Jordan visited Paris."])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    jordan = next(row for row in rows if row["surface"] == "Michael Jordan")
    assert set(jordan) == {"start", "end", "surface", "label", "entity", "score", "coreferent", "candidates"}
    assert (jordan["start"], jordan["end"]) == (10, 24) and len(jordan["candidates"]) == 3
    assert main(["link", "--target", linking_server, "Yesterday Michael Jordan visited Paris."]) == 0
    assert "10-24\tMichael Jordan\t->" in capsys.readouterr().out


def test_a_text_without_entity_mentions_says_so_on_stderr(linking_server: str, capsys) -> None:
    assert main(["link", "--target", linking_server, "the weather was mild and nothing happened at all"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "sleuth: no entity mention found in the text"
    assert main(["link", "--target", linking_server, "--json", "the weather was mild"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [] and "no entity mention" in captured.err


def test_link_command_reports_an_unreachable_server_in_one_line(capsys) -> None:
    assert main(["link", "--target", "127.0.0.1:1", "Paris"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sleuth: error: server 127.0.0.1:1 answered UNAVAILABLE") and err.count("\n") == 1
