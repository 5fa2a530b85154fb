"""Synthetic Roam pages with random names, numbers and dates: notes no model can memorise.

Grounded training dialogues built only from a person's own notes teach a small model to
recite those notes from its weights, not to read the notes put in its prompt (measured:
0 of 60 answers about unseen pages copied the block in the prompt; docs/notes.md). Pages
whose every fact is drawn at random can only be answered by copying from the context,
so dialogues about them teach exactly that. The pages look like a person's notes (people,
projects, trips, recipes, gear, places, habits), with Roam's markup, so what the model
learns carries over to the real graph.

Everything comes from one random.Random, so a seed fixes the pages.
"""

from __future__ import annotations

import random

from bytechat.notes.roam import RoamPage

_ONSETS = "b br c ch d dr f g gr h j k kl l m n p pr r s sh st t tr v w z".split()
_VOWELS = "a e i o u ai ea ie oa ou y".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "k", "m", "nd", "rt", "x"]
MONTHS = "January February March April May June July August September October November December".split()
_CITIES_SUFFIX = ["burg", "ton", "ville", "stad", "field", "haven", "mouth", "ford", "wick", "berg"]
_THINGS = "lamp kettle bike tent drill camera router printer heater blender".split()
_COLOURS = "red blue green black white yellow orange grey teal purple".split()
_FOODS = "flour sugar butter eggs milk rice lentils onions garlic tomatoes oats honey".split()
_UNITS = ["g", "ml", "tbsp", "tsp", "cups"]
_VERBS = "call email book buy fix send renew order return pay cancel check".split()
_OBJECTS = "the invoice|the tickets|a present|the tyres|the contract|the insurance|the bill|the form|the keys|the report".split(
    "|"
)


def word(rng: random.Random, syllables: int | None = None) -> str:
    n = syllables or rng.choice((1, 2, 2, 3))
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))


def name(rng: random.Random) -> str:
    return word(rng).capitalize()


def date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)}"


def full_date(rng: random.Random) -> str:
    day = rng.randint(1, 28)
    suffix = "th" if 10 <= day <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{rng.choice(MONTHS)} {day}{suffix}, {rng.randint(2019, 2028)}"


def time_of_day(rng: random.Random) -> str:
    return f"{rng.randint(6, 21)}:{rng.choice(('00', '15', '30', '45'))}"


def phone(rng: random.Random) -> str:
    return f"+{rng.randint(1, 49)} {rng.randint(100, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"


def city(rng: random.Random) -> str:
    return word(rng, 2).capitalize() + rng.choice(_CITIES_SUFFIX)


def _bullets(lines: list[str | tuple[str, list[str]]]) -> str:
    out = []
    for line in lines:
        if isinstance(line, tuple):
            head, children = line
            out.append(f"- {head}")
            out.extend(f"    - {child}" for child in children)
        else:
            out.append(f"- {line}")
    return "\n".join(out) + "\n"


_PLACES = "attic|garage|hall cupboard|shed|basement|desk drawer|blue folder|kitchen shelf".split("|")


def notes_block(rng: random.Random) -> tuple[str, list[str]]:
    """A block with two or three child lines of random facts: real notes are full of
    multi-line blocks, and an answer must quote all of a block's lines, not stop after
    the first."""
    facts = [
        f"{name(rng)} said the {rng.choice(_THINGS)} is in the {rng.choice(_PLACES)}.",
        f"Remember to {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} before {date(rng)}.",
        f"Code for the {rng.choice(_THINGS)}: {rng.randint(1000, 9999)}.",
        f"Met {name(rng)} {name(rng)} at {time_of_day(rng)}, talked about {word(rng)}.",
        f"{rng.randint(2, 30)} {rng.choice(_FOODS)} left, enough until {date(rng)}.",
    ]
    return rng.choice(("Notes", "Details", "Misc", "To remember")), rng.sample(facts, rng.choice((2, 2, 3)))


def an(word: str) -> str:
    """word with its indefinite article: "a teal tent", "an orange tent"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


_RELATIONS = (
    "friend",
    "colleague",
    "neighbour",
    "cousin",
    "climbing partner",
    "flatmate",
    "old school friend",
    "running partner",
)
_REMARKS = (
    "Loves cake.",
    "Always forgets mine.",
    "Party at the {thing} museum?",
    "Send a card.",
    "Turns {n} this year.",
)
_ASIDES = ("mobile", "work", "only after 18:00", "WhatsApp")
PRONOUNS = {"she": ("She", "her"), "he": ("He", "his"), "they": ("They", "their")}


def person_page(rng: random.Random) -> RoamPage:
    """A person, with a pronoun used on the page (follow-up questions use it) and values
    that sometimes run on past the fact ("14 October. Loves cake.", "+49 ... (mobile)",
    "my cousin"): the answer says the fact, not the rest of the line."""
    first, last = name(rng), name(rng)
    subject, possessive = PRONOUNS[rng.choice(("she", "he", "they"))]
    birthday = date(rng)
    if rng.random() < 0.3:
        remark = rng.choice(_REMARKS).format(thing=word(rng).capitalize(), n=rng.randint(20, 70))
        birthday += f". {remark}"
    number = phone(rng) + (f" ({rng.choice(_ASIDES)})" if rng.random() < 0.3 else "")
    relation = ("my " if rng.random() < 0.4 else "") + rng.choice(_RELATIONS)
    likes = "like" if subject == "They" else "likes"
    lines: list = [
        "type:: #person",
        f"birthday:: {birthday}",
        f"phone:: {number}",
        f"lives in:: {city(rng)}",
        f"relation:: {relation}",
        f"{subject} {likes} {word(rng)} tea and {rng.choice(_COLOURS)} {rng.choice(_THINGS)}s.",
        (
            "Gift ideas",
            [an(f"{rng.choice(_COLOURS)} {rng.choice(_THINGS)}"), f"tickets for {name(rng)} {name(rng)}"],
        ),
        f"{{{{[[TODO]]}}}} {rng.choice(_VERBS)} {first} about {rng.choice(_OBJECTS)} by {date(rng)}",
        f"Works at {name(rng)} & {name(rng)}; {possessive} desk is on floor {rng.randint(1, 12)}.",
    ]
    lines.append(notes_block(rng))
    rng.shuffle(lines)
    return RoamPage(f"{first} {last}", _bullets(lines))


def project_page(rng: random.Random) -> RoamPage:
    title = f"Project {name(rng)}"
    todos = [
        f"{{{{[[{rng.choice(('TODO', 'TODO', 'DONE'))}]]}}}} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        for _ in range(3)
    ]
    lines: list = [
        f"status:: {rng.choice(('planning', 'in progress', 'blocked', 'done', 'paused'))}",
        f"deadline:: {full_date(rng)}",
        f"budget:: {rng.randint(2, 90) * 50} euros",
        f"owner:: {name(rng)} {name(rng)}",
        ("Next steps", todos),
        f"Kick-off meeting at {time_of_day(rng)} in room {rng.randint(1, 9)}{rng.choice('ABC')}{rng.randint(0, 9)}.",
    ]
    lines.append(notes_block(rng))
    rng.shuffle(lines)
    return RoamPage(title, _bullets(lines))


def trip_page(rng: random.Random) -> RoamPage:
    place = city(rng)
    lines: list = [
        f"dates:: {date(rng)} to {date(rng)}",
        f"hotel:: Hotel {name(rng)}, room {rng.randint(100, 990)}",
        f"flight:: {rng.choice('ABCDEFGHKLMNPRSTUVWXYZ')}{rng.choice('ABCDEFGHKLMNPRSTUVWXYZ')} {rng.randint(100, 9999)} at {time_of_day(rng)}",
        (
            "Packing",
            [
                f"{rng.randint(2, 7)} {rng.choice(('shirts', 'socks', 'books'))}",
                f"the {rng.choice(_COLOURS)} {rng.choice(_THINGS)}",
            ],
        ),
        f"Must see: the {name(rng)} museum and {name(rng)} market.",
    ]
    lines.append(notes_block(rng))
    rng.shuffle(lines)
    return RoamPage(f"Trip to {place}", _bullets(lines))


def recipe_page(rng: random.Random) -> RoamPage:
    dish = f"{name(rng)} {rng.choice(('soup', 'stew', 'cake', 'salad', 'bread', 'curry', 'pie'))}"
    ingredients = [
        f"{rng.randint(1, 9) * rng.choice((1, 10, 50))} {rng.choice(_UNITS)} {food}" for food in rng.sample(_FOODS, 3)
    ]
    lines: list = [
        f"serves:: {rng.randint(2, 8)}",
        f"time:: {rng.randint(2, 18) * 5} minutes",
        ("Ingredients", ingredients),
        f"Bake at {rng.randint(14, 24) * 10} °C until golden.",
        f"From {name(rng)}'s cookbook, page {rng.randint(10, 400)}.",
    ]
    lines.append(notes_block(rng))
    rng.shuffle(lines)
    return RoamPage(f"Recipes/{dish}", _bullets(lines))


def gear_page(rng: random.Random) -> RoamPage:
    thing = f"{name(rng)} {rng.choice(_THINGS)}"
    lines: list = [
        f"bought:: {full_date(rng)}",
        f"price:: {rng.randint(10, 900)} euros",
        f"serial:: {word(rng, 1).upper()}-{rng.randint(1000, 99999)}",
        f"warranty:: {rng.randint(1, 5)} years",
    ]
    place = f"the {rng.choice(('attic', 'garage', 'hall cupboard', 'shed', 'basement'))}, {rng.choice(_COLOURS)} box"
    lines.append(f"location:: {place}" if rng.random() < 0.5 else f"Kept in {place}.")
    lines.append(notes_block(rng))
    rng.shuffle(lines)
    return RoamPage(thing, _bullets(lines))


def count_page(rng: random.Random) -> RoamPage:
    noun = word(rng, 2) + "s"
    lines: list = [
        f"{noun}:: {rng.randint(2, 40)}",
        f"where:: {city(rng)}, plot {rng.randint(1, 60)}",
        f"Started with {rng.randint(1, 9)} {noun} in {rng.randint(2015, 2026)}.",
        (
            "Log",
            [
                f"{full_date(rng)}: checked, all {rng.choice(('fine', 'busy', 'quiet', 'healthy'))}",
                f"{full_date(rng)}: moved two",
            ],
        ),
    ]
    lines.append(notes_block(rng))
    rng.shuffle(lines)
    return RoamPage(noun.capitalize(), _bullets(lines))


PAGE_KINDS = (person_page, person_page, project_page, trip_page, recipe_page, gear_page, count_page)


def synthetic_pages(rng: random.Random, n: int) -> list[RoamPage]:
    """n random pages with distinct names."""
    pages, seen = [], set()
    while len(pages) < n:
        page = rng.choice(PAGE_KINDS)(rng)
        if page.name not in seen:
            seen.add(page.name)
            pages.append(page)
    return pages
