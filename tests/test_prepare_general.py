"""scripts/prepare_general.py's pieces that need no download: the MediaWiki stripper, the sentence splitter and the
held-out sentence test."""

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load():
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("prepare_general", SCRIPTS / "prepare_general.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


pg = load()

PAGE = """{{Infobox country|name=Albania|capital=[[Tirana]]}}
'''Albania''' is a [[country]] in [[Southeastern Europe|south-eastern Europe]], with a coast on the
[[Adriatic Sea]].<ref name="cia">{{cite web|url=http://example.org|title=Factbook}}</ref>
It covers {{convert|28748|km2}}.
[[File:Flag.svg|thumb|The flag, with [[eagle|an eagle]].]]

== History ==
{| class="wikitable"
| 1912 || independence
|}
* a list item that is not prose at all here
The country declared independence in 1912, after five centuries of [[Ottoman Empire|Ottoman]]
rule.<ref>Smith, p. 4.</ref>

== References ==
{{reflist}}
Some text after the references that goes, like the rest of such sections.
[[Category:Countries]]
[[de:Albanien]]
"""


def test_strip_wiki_keeps_prose_only():
    assert pg.strip_wiki(PAGE) == [
        "Albania is a country in south-eastern Europe, with a coast on the Adriatic Sea. It covers 28748 km2.",
        "The country declared independence in 1912, after five centuries of Ottoman rule.",
    ]


def test_sentences_split_at_sentence_ends():
    assert pg.sentences('He said: "We won." Then   they left! 3 more came? yes. (Later) the end') == [
        'He said: "We won."', "Then they left!", "3 more came? yes.", "(Later) the end"]


def test_held_out_matches_glued_sentences():
    held = pg.HeldOut({"Quarterly profits at US media giant TimeWarner jumped 76%.",
                       'He said: "It is over now, for good."'})
    assert "Quarterly profits at US media giant TimeWarner jumped 76%." in held
    assert "Ad sales boost Time Warner profit Quarterly profits at US media giant TimeWarner jumped 76%." in held
    assert "profits at US media giant TimeWarner jumped 76%." in held  # the end of a held-out sentence
    assert "He said: It is over now, for good." in held  # quotes are not compared
    assert "Profits at a media giant rose." not in held
    assert "TimeWarner jumped 76%." not in held  # too short to count as a part
