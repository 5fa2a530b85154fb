"""How the notes index is searched (docs/notes.md, "How retrieval works").

Search.find ranks a question's topic words (bytechat.notes.query) by FTS5 bm25 several
ways: as typed; over the blocks' own key and text (FTS5's bm25 divides a page-title
match, shared by all of a page's blocks, by the whole row's length and so favours a
page's shortest blocks); with the notes' own words a typo or word form may mean; and,
for a follow-up, with the conversation's topic. The lists are fused by reciprocal rank
with the candidates holding what the question word asks for, and a block is kept only
with EVIDENCE: its share of the question's words, each weighted by how specific it is
in English. A question whose every word is in a page's title gets that page's most
blocks from the top, tags-only ones last. NotesIndex (bytechat.notes.index) is a Search
over its SQLite connection.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from typing import Sequence

from bytechat.notes.answer_kinds import answer_kind, span_kind
from bytechat.notes.blocks import NoteBlock, is_tags_only
from bytechat.notes.links import block_link
from bytechat.notes.query import (
    Vocabulary,
    counted_word,
    day_mentions,
    fuse,
    head_noun,
    in_title,
    is_compound_of,
    is_elliptical,
    is_known,
    match_expression,
    named_dates,
    phrases,
    possessors,
    query_terms,
    refers_back,
    specificity,
    title_expression,
    words,
)
from bytechat.notes.readers.model import day_title

CANDIDATES = 8  # each retriever ranks k * CANDIDATES blocks before fusion
EVIDENCE = 0.4  # a hit must hold this specificity-weighted share of the question's words
NEIGHBOUR_WEIGHT = 0.6  # a word matched through a vocabulary neighbour, in fusion and evidence
_EARLIEST_YEAR, _LATEST_YEAR = 1900, 2100  # the years a day named without one is looked up in
TOPIC_WEIGHT = 0.5  # a follow-up's conversation topic, in fusion
TEXT_LIST_WEIGHT = 0.5  # the ranking over blocks' own key and text (no title), in fusion
ANSWER_KIND_WEIGHT = 0.5  # the candidates holding what the question word asks for, in fusion
SAY_THE_ASKED = True  # a hit must say a question word that names no page, where there is one (rule 4)
SAY_WHOLE_PHRASE = True  # and where the asked words run together ("blood type"), all of one run (rule 4)
KIND_ON_NAMED_PAGE = True  # the kind asked says what is asked only on a page the question names
SAY_NOT_OWNER = True  # whose fact is asked ("Kasia's") is not what is asked (rule 4)
SAY_THE_COUNTED = True  # "how many altos" / "how much salt": the block says what is counted (rule 4)
SAY_THE_KIND = True  # a question for a kind of text (a date, an amount) is answered by a block holding it
TAGS_LAST = True  # a block of tags alone comes after every block that says something
LIGHT_WORD = 5.5  # Zipf frequency: a word this common ("use", "take", "make") asks nothing a hit must say
SAY_THE_DAY = True  # a day, month or year a question names is said by a hit or its page (rule 4)
WHO_WHERE_RISE = True  # the blocks naming someone ("who") or a place ("where") rise in fusion
SAY_THE_HEAD = True  # "which platform ...?", "what's the rent ...?": a hit says that noun (rule 4)
PAGE_BULLETS_FIRST = True  # a whole page's answer takes each bullet's first block before a bullet's others
PAGE_BLOCKS = 5  # a whole-page question ("tell me about X") gets up to this many of the page's blocks

_SEARCH = """
SELECT b.id, b.page, b.text, b.position, hits.rank
FROM (SELECT rowid, rank FROM blocks_fts WHERE blocks_fts MATCH ? ORDER BY rank LIMIT ?) AS hits
JOIN blocks AS b ON b.id = hits.rowid
ORDER BY hits.rank, b.id
"""
# The page whose title holds every term (bm25 over titles: a shorter title wins), then its blocks.
_TITLE_SEARCH = "SELECT page, -rank FROM titles WHERE titles MATCH ? ORDER BY rank LIMIT 1"
_TITLED = "SELECT 1 FROM titles WHERE titles MATCH ? LIMIT 1"  # a word some page's title holds
_PAGE_BLOCKS = "SELECT id, page, text, position FROM blocks WHERE page = ? ORDER BY position"


def _names(named: list[list[str]], page: str) -> bool:
    """Whether one of the question's title words (or a neighbour of it) is a word of page's title."""
    title = set(words(page))
    return any(in_title(w, title) for group in named for w in group)


@dataclass(frozen=True)
class Hit:
    page: str
    text: str
    score: float  # -bm25(): higher is better
    position: int = 0  # the block's index within its page
    uid: str = ""  # where it came from (NoteBlock's fields), and a link that opens it
    source: str = ""
    line: int = 0
    link: str = ""

    @property
    def block(self) -> NoteBlock:
        return NoteBlock(self.page, self.text, self.position, uid=self.uid, source=self.source, line=self.line)


class Search:
    """The ranking over an index's tables; the subclass sets _conn (read under _lock),
    _vocab, _n_blocks, _folder, _graph and meta."""

    _conn: sqlite3.Connection
    _lock: threading.RLock
    _vocab: Vocabulary
    _n_blocks: int
    _folder: str
    _graph: str
    meta: dict

    def find(self, query: str, k: int = 3, topic: Sequence[str] = ()) -> list[Hit]:
        """The k best blocks for query, best first; [] if it has no topic words or no
        block holds enough of them (see the module docstring).

        topic: for a follow-up ("who teaches it?"), the conversation's topic, most
        telling first (the previous question, then the reply to it). Its words rank
        below the query's own (TOPIC_WEIGHT); when the query refers back (an anaphor),
        a block that holds enough of the previous question's words has evidence too;
        a query with no words of its own is searched by the topic alone."""
        if k <= 0:
            return []
        with self._lock:
            titled = self._day_titled(query)
            topic = [self._day_titled(text) for text in topic]
        day_named, query = titled != query, titled
        own = self.topic_words(query)
        context = [t for t in dict.fromkeys(w for text in topic for w in self.topic_words(text)) if t not in own]
        base = own or context
        if not base:
            return []
        limit = int(k) * CANDIDATES
        with self._lock:
            near = {t: self._vocab.neighbours(t) for t in [*own, *context] if not self._matches_any(t)}
            unheld = own and all(t in near and not near[t] for t in own)  # no block holds them, nor a neighbour
            if topic and unheld and (refers_back(query) or is_elliptical(query)):
                # "and nuts?" after the granola's oats, "what medication is he on?": about the
                # topic, in words the notes never use, so the topic is what is searched.
                own, context = [], [*own, *context]
                base = [t for t in context if t not in near or near[t]] or context
            follows = bool(own and topic and refers_back(query))  # "where does he work?"
            routed = base
            if day_named:  # "what happened on 3 December?": the day's page, whatever the notes never say
                routed = [t for t in base if near.get(t, True)]  # near: the words no block matches
            # A pronoun names the subject, so a page the follow-up's own words name
            # ("Work/Office Move") is not what it is about.
            page = [] if follows else self._page_route(routed, near, k, query, bool(topic))
            if page:
                return page
            close = [w for t in base for w in near.get(t, [])]
            lists = [
                (1.0, self._ranked(base, limit)),
                (TEXT_LIST_WEIGHT, self._ranked([*base, *close], limit, own_text=True)),
            ]
            if close:
                lists.append((NEIGHBOUR_WEIGHT, self._ranked([*base, *close], limit)))
            if own and context:
                lists.append((TOPIC_WEIGHT, self._ranked([*own, *context, *close], limit)))
            fused = fuse(lists)
            kind = answer_kind(query)
            holding = {r[0] for r in fused if kind is not None and kind.search(r[2])}  # what the question word asks for
            # and for a name ("who") or a place ("where"): the answer head's kind, its asking words as typed
            rise = span_kind(query) if WHO_WHERE_RISE else kind
            if rise is not None:  # those candidates rise
                risen = [r for r in fused if r[0] in holding or (rise is not kind and rise.search(r[2]))]
                fused = fuse([(1.0, fused), (ANSWER_KIND_WEIGHT, risen)])
            ids = [row[0] for row in fused]
            evidence = self._evidence(base if own else self.topic_words(topic[0]) or base, near, ids)
            about = set()  # blocks about what the pronoun points back at
            if follows:  # the topic's blocks count
                for said in topic:  # the previous question, then the replies to it
                    asked = [t for t in self.topic_words(said) if t not in own]
                    for rowid, value in self._evidence(asked, near, ids).items():
                        evidence[rowid] = max(evidence[rowid], value)
                        if value >= EVIDENCE:
                            about.add(rowid)
            # "when is my mum's birthday?": whose birthday is asked; a block that does not
            # name her (or sit on her page) answers someone else's.
            # "the sea temperature on Christmas Day": when it is asked of, as whose; a block that does
            # not say that day (nor sit on its page) answers another day.
            owners = [*possessors(query), *(named_dates(query) if SAY_THE_DAY else [])]
            for owner in (t for t in dict.fromkeys(owners) if t in own):
                named = self._evidence([owner], near, ids)
                evidence = {rowid: value if named[rowid] > 0 else 0.0 for rowid, value in evidence.items()}
            if SAY_THE_ASKED and own and not follows:  # a follow-up's subject is the pronoun's
                said = self._say_the_asked(own, near, fused, kind, query)
                evidence = {rowid: value if rowid in said else 0.0 for rowid, value in evidence.items()}
            if SAY_THE_KIND and kind is not None:  # "when was the choir founded?": a block with no date answers none
                evidence = {rowid: value if rowid in holding else 0.0 for rowid, value in evidence.items()}
        kept = [row for row in fused if evidence[row[0]] >= EVIDENCE]
        # "when did she start?" after "who is Priya?": Priya's blocks first, before other
        # pages that say "started" (the pronoun names whom the question is about).
        kept = [row for row in kept if row[0] in about] + [row for row in kept if row[0] not in about]
        if TAGS_LAST:  # `type: #person #work` answers no question but one for its key ("what type ...?")
            asked = set(query_terms(query))
            filed = [row for row in kept if is_tags_only(row[2]) and not asked & set(words(row[2].split(":")[0]))]
            kept = [row for row in kept if row not in filed] + filed
        return self._with_origin(kept[:k])

    def _with_origin(self, rows: list[tuple]) -> list[Hit]:
        """Hits of (id, page, text, position, score) rows, with where each block came from."""
        with self._lock:
            sql = f"SELECT id, uid, source, line, heading FROM blocks WHERE id IN ({','.join('?' * len(rows))})"
            origin = {row[0]: row[1:] for row in self._conn.execute(sql, [row[0] for row in rows])}
        hits = []
        for rowid, page, text, position, score in rows:
            uid, source, line, heading = origin[rowid]
            link = block_link(self.meta.get("notes_format", ""), self._folder, page, uid, source, heading, self._graph)
            hits.append(Hit(page, text, score, position, uid, source, line, link))
        return hits

    def topic_words(self, text: str) -> list[str]:
        """query_terms(text) less the misspelt ways of asking ("wat", "wen") the notes never
        use; a word FTS5 matches (stemming included: "live" for "Lives") is never one."""
        with self._lock:
            return [t for t in query_terms(text) if not self._vocab.is_misspelt_asking(t) or self._matches_any(t)]

    def _day_titled(self, text: str) -> str:
        """text with each day it names written as that day's page title, if the notes have
        one ("on 3 December" -> "on December 3rd, 2026"; with no year said, the latest)."""
        for mention in reversed(day_mentions(text)):
            years = [mention.year] if mention.year else range(_LATEST_YEAR, _EARLIEST_YEAR - 1, -1)
            titles = [day_title(year, mention.month, mention.day) for year in years]
            sql = f"SELECT DISTINCT page FROM blocks WHERE page IN ({','.join('?' * len(titles))})"
            found = [row[0] for row in self._conn.execute(sql, titles)]
            if found:  # the latest year the notes have a page for
                text = text[: mention.start] + min(found, key=titles.index) + text[mention.end :]
        return text

    def _matches_any(self, term: str) -> bool:
        sql = "SELECT 1 FROM blocks_fts WHERE blocks_fts MATCH ? LIMIT 1"
        return self._conn.execute(sql, (match_expression([term]),)).fetchone() is not None

    def _ranked(self, terms: list[str], limit: int, own_text: bool = False) -> list[tuple]:
        """bm25's ranking of the blocks matching any of terms; own_text: in the block's
        key or text only (FTS5's bm25 divides by the whole row's length, so a page-title
        match, which every block of the page shares, favours the page's shortest blocks)."""
        expression = match_expression(dict.fromkeys(terms))
        if own_text:
            expression = "{key text} : (" + expression + ")"
        return self._conn.execute(_SEARCH, (expression, limit)).fetchall()

    def _page_route(
        self, terms: list[str], near: dict[str, list[str]], k: int, query: str = "", follow_up: bool = False
    ) -> list[Hit]:
        """A question whose every word (or a neighbour of it) is in a page's title: that
        page's blocks from the top (people write what matters first), tags-only last. A
        question for one fact (answer_kind: a TODO, a date, a number) gets the blocks
        holding that kind first, and among them those that say a question word
        themselves ("how much honey in the granola?": the line with the honey). A
        question for the whole page gets up to PAGE_BLOCKS blocks (k if k is more), as
        many as the prompt then holds; one for a fact, k. A follow-up on the page the
        conversation is about ("and which mushrooms?" after the risotto's rice) asks for
        something in it, not for the page again: the blocks that say its words come first,
        and k of them."""
        groups = [[t, *near.get(t, [])] for t in terms]
        best = self._conn.execute(_TITLE_SEARCH, (title_expression(groups),)).fetchone()
        if best is None:
            return []
        title, score = best
        rows = [(*row, score) for row in self._conn.execute(_PAGE_BLOCKS, (title,))]
        kind = answer_kind(query)
        own = set()
        specific = kind is not None or follow_up  # a question for something in the page, not "tell me about X"
        if specific:
            own = {row[0] for row in self._ranked([w for g in groups for w in g], len(rows) + 1, own_text=True)}
        rows.sort(key=lambda r: (kind is not None and not kind.search(r[2]), r[0] not in own, is_tags_only(r[2]), r[3]))
        if PAGE_BULLETS_FIRST and not specific:
            rows = _bullets_first(rows)
        return self._with_origin(rows[: k if specific else max(k, PAGE_BLOCKS)])

    def _say_the_asked(
        self, terms: list[str], near: dict[str, list[str]], rows: list[tuple], kind, query: str = ""
    ) -> set[int]:
        """The ids of rows that say what a question asks, where it asks more than a page's
        name: in their own key or text, one of its words that is in no page's title (or a
        neighbour of it), or the kind of text its question word asks for (answer_kind).
        "what's Tomasz's wife called?" is not answered by a block that says "Tomasz" and
        neither "wife" nor "called" (a near miss), and "how long does the crumble bake?" is
        by "190 °C, 35 minutes" (the kind stands in for the word on a page the question
        names, so Oskar's "Saturday school" says no date of "When is Kasia's birthday?").
        Whose fact is asked ("Kasia's") is not what is asked, and a compound is said whole.
        A question whose only such words are English's commonest asks nothing a block must
        say ("which pears do I use in the crumble?")."""
        ids = [row[0] for row in rows]
        owners = set(possessors(query)) if SAY_NOT_OWNER else set()  # "Kasia's birthday" asks it of Kasia
        asked = [
            t
            for t in terms
            if t not in owners and self._conn.execute(_TITLED, (match_expression([t]),)).fetchone() is None
        ]
        if not ids or all(specificity(t) < 7 - LIGHT_WORD for t in asked):  # none, or "which pears do I use?"
            return set(ids)
        sql = f"SELECT rowid FROM blocks_fts WHERE blocks_fts MATCH ? AND rowid IN ({','.join('?' * len(ids))})"

        def saying(expression: str) -> set[int]:  # the ids whose own key or text match expression
            return {rowid for (rowid,) in self._conn.execute(sql, ("{key text} : (" + expression + ")", *ids))}

        counted = counted_word(query, asked) if SAY_THE_COUNTED else None
        if counted is not None and specificity(counted) >= 7 - LIGHT_WORD:  # not "how many people"
            # "how many altos ...?": a count is said with what it counts
            return saying(match_expression([counted, *near.get(counted, [])]))
        titled_near = {t: self._titled_near(near.get(t, [])) for t in terms}
        runs = [[t] for t in asked]
        if SAY_WHOLE_PHRASE and query:
            # A compound ("blood type", "spare key") is said whole: two weighty words side
            # by side, neither naming a page through a neighbour ("bookclub") nor unknown to
            # English (a typo: "numbr" may be a light word). Light words and longer runs
            # ("kombucha secnd ferment flavours", typed telegraphically) are said word by word.
            weighty = [t for t in asked if is_known(t) and specificity(t) >= 7 - LIGHT_WORD and not titled_near[t]]
            pairs = [run for run in phrases(query, weighty) if len(run) == 2]
            paired = {t for run in pairs for t in run}
            runs = pairs + [[t] for t in asked if t not in paired]
        held = saying(
            " OR ".join(
                "(" + " AND ".join("(" + match_expression([t, *near.get(t, [])]) + ")" for t in run) + ")"
                for run in runs
            )
        )
        head = head_noun(query) if SAY_THE_HEAD else None
        if head in asked and kind is None and specificity(head) >= 7 - LIGHT_WORD and not titled_near[head]:
            # "which platform": one that says it, or a compound of it ("what nuts": "walnuts")
            compounds = {row[0] for row in rows if any(is_compound_of(w, head) for w in words(row[2]))}
            held &= saying(match_expression([head, *near.get(head, [])])) | compounds
        named = [[t, *near.get(t, [])] for t in terms if t not in asked or titled_near[t]]
        return {
            row[0]
            for row in rows
            if row[0] in held
            or (kind is not None and kind.search(row[2]) and (not KIND_ON_NAMED_PAGE or _names(named, row[1])))
        }

    def _titled_near(self, neighbours: list[str]) -> bool:
        """Whether a page's title holds one of a word's neighbours (a typo's, a compound's)."""
        return any(self._conn.execute(_TITLED, (match_expression([w]),)).fetchone() for w in neighbours)

    def _evidence(self, terms: list[str], near: dict[str, list[str]], ids: list[int]) -> dict[int, float]:
        """For each block id, the rarity-weighted share of the searched words it holds
        (FTS5's own tokenizer and stemmer decide what holds; a neighbour counts less)."""
        if not ids:
            return {}
        held = dict.fromkeys(ids, 0.0)
        marks = ",".join("?" * len(ids))
        sql = f"SELECT rowid FROM blocks_fts WHERE blocks_fts MATCH ? AND rowid IN ({marks})"
        total = 0.0
        for term in terms:
            mass = specificity(term)
            total += mass
            found = {rowid for (rowid,) in self._conn.execute(sql, (match_expression([term]), *ids))}
            if near.get(term):
                close = {rowid for (rowid,) in self._conn.execute(sql, (match_expression(near[term]), *ids))}
                for rowid in close - found:
                    held[rowid] += NEIGHBOUR_WEIGHT * mass
            for rowid in found:
                held[rowid] += mass
        return {rowid: value / total if total else 0.0 for rowid, value in held.items()}


def _bullets_first(rows: list[tuple]) -> list[tuple]:
    """rows (id, page, text, position, score) in their order, the first block of each bullet
    before the rest: a long bullet is indexed one child at a time, each block opening with
    its parent's line ("Meetings", "Got back from Cork on Sunday after two nights a…"), and
    the prompt holds three or four blocks, so a page's summary should not spend them on one
    bullet's children."""
    firsts, rest, seen = [], [], []
    for row in rows:
        head = row[2].split("\n", 1)[0].removesuffix("\u2026")
        if any(line.startswith(head) or head.startswith(line) for line in seen):
            rest.append(row)
        else:
            seen.append(head)
            firsts.append(row)
    return firsts + rest
