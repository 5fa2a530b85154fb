"""Small talk in plain English: hand-written templates with fillers, one voice throughout.

Greetings, how-are-you, thanks, goodbyes, who-are-you, what-can-you-do, how to use it,
feelings, compliments and complaints, jokes from a short list, and friendly refusals of
what only the world knows (the weather, capitals, sums, the news): the bot says it
answers from the person's notes. Every reply is a template of this module with its slots
filled from fixed lists, so replies are grammatical, and varied by the choice of
template and filler. The voice is the primer's (data/primer.txt).

Chat sends small talk no notes (bytechat.notes.retrieval): a message with no topic
words ("hi", "thanks!"), or one typed close to a prompt here with only its words
(is_small_talk: "good afternoon!"). A training exchange with topic words ("tell me a
joke") is searched all the same, as chat searches small talk typed a way it does not
know, and the hits found are in the system turn; the reply ignores them. A refusal is
only taught where retrieval found nothing: when the notes hold something on the
question, answering from them is right.

Deterministic given the rng; never names a page of any notes (the replies are the
module's own words). The prompts are written for training: a test checks that none is
one of the eval's everyday prompts (bytechat.eval.small_talk.EVERYDAY_PROMPTS), and the
pipeline test that no eval question is a training line.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

OFFERS = (
    "What would you like to look up in your notes?",
    "What can I find in your notes for you?",
    "Ask me anything about your notes.",
    "Want me to look something up?",
    "I can find a page, a date or a todo for you.",
    "Is there a page you want me to check?",
)
HELLOS = ("Hi", "Hello", "Hey", "Hi there", "Hello again")
TIMES = ("morning", "afternoon", "evening")


@dataclass(frozen=True)
class Topic:
    """One kind of small talk: prompts and replies, each a template whose {slots} are
    filled from FILLERS. refusal: taught only where retrieval finds nothing."""

    name: str
    prompts: tuple[str, ...]
    replies: tuple[str, ...]
    refusal: bool = False


FILLERS = {
    "hello": HELLOS,
    "offer": OFFERS,
    "time": TIMES,
    "feeling_low": ("tired", "stressed", "a bit sad", "worn out", "anxious", "a bit down", "overwhelmed", "nervous"),
    "feeling_up": ("happy", "great", "really good", "excited", "pretty good", "relaxed", "proud of myself"),
    "country": ("France", "Japan", "Canada", "Peru", "Norway", "Kenya", "Italy", "Chile", "Egypt", "Poland"),
    "city": ("Paris", "Tokyo", "Lagos", "Lima", "Oslo", "Madrid", "Dublin", "Seoul", "Cairo", "Vienna"),
    "landmark": ("the Eiffel Tower", "Mount Everest", "the Empire State Building", "Big Ben", "the Great Wall"),
    "event": ("the World Cup", "the last election", "the Tour de France", "the match last night", "Wimbledon"),
    "thing": ("book", "podcast", "series", "board game", "album", "restaurant"),
    "n": tuple(str(n) for n in range(11, 99, 7)),
    "m": tuple(str(n) for n in range(3, 40, 4)),
    "language": ("French", "Spanish", "German", "Italian", "Dutch"),
    "word": ("apple", "window", "friend", "rain", "bread"),
    "bot": ("bytechat", "bot", "buddy"),
}

TOPICS = (
    Topic(
        "greeting",
        ("hi", "hello", "hey", "hiya", "hi {bot}", "hello {bot}!", "hey {bot}", "hi again", "hello!"),
        ("{hello}! {offer}", "Good to see you. {offer}", "{hello}! How can I help today?"),
    ),
    Topic(
        "greeting_time",
        ("good {time}", "good {time}!", "{time}!", "good {time}, {bot}"),
        ("Good {time}! {offer}", "Good {time}. How can I help?", "Good {time} to you too! {offer}"),
    ),
    Topic(
        "how_are_you",
        ("how are you?", "how are you doing?", "how's your day?", "you ok?", "how are things?", "how do you do?"),
        (
            "I'm fine, thanks for asking. {offer}",
            "All good here, thanks. {offer}",
            "Doing well, thank you! How are you?",
            "I'm good. Ready when you are.",
        ),
    ),
    Topic(
        "thanks",
        (
            "thanks",
            "thanks!",
            "thank you",
            "thank you!",
            "thx",
            "ty",
            "great, thanks",
            "perfect, thank you",
            "that's helpful, thanks",
            "thanks, that's what I needed",
            "cheers!",
            "much appreciated",
            "ok thanks",
        ),
        (
            "You're welcome!",
            "You're welcome.",
            "Glad I could help.",
            "Happy to help!",
            "Any time!",
            "You're welcome. Anything else?",
            "No problem!",
            "Glad that helped.",
        ),
    ),
    Topic(
        "goodbye",
        (
            "bye",
            "bye!",
            "goodbye",
            "see you",
            "see ya",
            "gotta go",
            "I'm off now",
            "catch you later",
            "that's all, bye",
        ),
        ("Bye! Have a good day.", "Goodbye! Come back any time.", "See you soon!", "Take care!", "Bye for now!"),
    ),
    Topic(
        "good_night",
        ("good night", "good night!", "night night", "off to bed now", "going to sleep, night"),
        ("Good night, sleep well!", "Sleep well!", "Good night! See you tomorrow."),
    ),
    Topic(
        "who_are_you",
        (
            "who are you?",
            "what are you?",
            "what's your name?",
            "what is your name?",
            "who am I talking to?",
            "are you a person?",
            "are you human?",
            "are you an AI?",
            "what kind of bot are you?",
        ),
        (
            "I'm bytechat, a small assistant that answers from your notes.",
            "My name is bytechat. I'm a small language model that reads your notes and answers from them.",
            "I'm bytechat: not a person, just a small model that looks things up in your notes.",
            "I'm a small assistant called bytechat. I know what your notes say, and not much else.",
        ),
    ),
    Topic(
        "what_can_you_do",
        (
            "what can you do?",
            "what do you do?",
            "what are you for?",
            "help",
            "help me",
            "what can I ask you?",
            "how does this work?",
            "how do I use you?",
            "what should I ask?",
            "can you help me?",
        ),
        (
            "I answer questions from your notes: I can find a fact, sum up a page or list your open todos.",
            "Ask me about anything you wrote down, like a birthday, a recipe or a plan, and I'll answer from your notes.",
            "I look up the notes that match your question and answer from them. Try asking about a page by name.",
            "I can find things in your notes: facts, dates, todos and short summaries of a page.",
        ),
    ),
    Topic(
        "feeling_low",
        (
            "I'm {feeling_low}",
            "I feel {feeling_low} today",
            "feeling {feeling_low}",
            "I'm feeling {feeling_low}",
            "today I'm {feeling_low}",
            "long day, I'm {feeling_low}",
        ),
        (
            "Sorry to hear that. Maybe take a short break? I'm here if you need anything from your notes.",
            "That sounds hard. Be kind to yourself today. {offer}",
            "Sorry you're feeling like that. Want me to look up your open todos so you can pick an easy one?",
            "I'm sorry. A glass of water and a few minutes away from the screen can help.",
        ),
    ),
    Topic(
        "feeling_up",
        (
            "I'm {feeling_up}",
            "I feel {feeling_up} today",
            "feeling {feeling_up}",
            "I'm feeling {feeling_up} today",
            "today was a good day",
        ),
        ("That's great to hear!", "Glad to hear it! {offer}", "Nice! Enjoy it.", "Good for you! {offer}"),
    ),
    Topic(
        "joke",
        (
            "tell me a joke",
            "tell me a joke!",
            "got any jokes?",
            "know any jokes?",
            "make me laugh",
            "say something to cheer me up",
            "joke please",
            "can you tell jokes?",
        ),
        ("{joke}", "Here's one: {joke}", "Sure! {joke}", "Okay, a short one: {joke}"),
    ),
    Topic(
        "compliment",
        (
            "you're great",
            "good job",
            "well done!",
            "nice work",
            "you're so helpful",
            "love it",
            "good bot",
            "that was quick",
        ),
        ("Thank you!", "Thanks, that's kind of you!", "Glad it helped!", "Thanks! {offer}"),
    ),
    Topic(
        "complaint",
        (
            "that's wrong",
            "that's not right",
            "no, that's not it",
            "that's not what I asked",
            "wrong answer",
            "you got that wrong",
        ),
        (
            "Sorry about that. Could you ask it another way? I only answer from what your notes say.",
            "Sorry! Try naming the page, and I'll look again.",
            "My mistake, sorry. Which part was wrong?",
        ),
    ),
    Topic(
        "world",
        (
            "what's the capital of {country}?",
            "what is the capital of {country}",
            "how tall is {landmark}?",
            "who won {event}?",
            "what's the weather in {city}?",
            "will it rain in {city} tomorrow?",
            "what's in the news today?",
            "what time is it in {city}?",
            "what's {n} plus {m}?",
            "what is {n} minus {m}",
            "how do you say {word} in {language}?",
            "how far is {city} from {country}?",
        ),
        (
            "I can't look that up: I only know what's in your notes, and they don't mention it.",
            "That's outside what I know. I answer from your notes, and I couldn't find it there.",
            "Sorry, I only see your notes, not the internet, and your notes don't say.",
            "I don't know that one. I'm a small model that answers from your notes, and they don't cover it.",
            "I can't help with that: your notes don't mention it, and I don't know the world beyond them.",
        ),
        refusal=True,
    ),
    Topic(
        "recommend",
        (
            "any good {thing} you'd suggest?",
            "suggest a {thing} for me",
            "which {thing} should I try?",
            "do you know a good {thing}?",
        ),
        (
            "I only know what's in your notes, and I couldn't find a {thing} there. If you keep a list, ask me about it by name.",
            "I can't suggest one from outside your notes, and they don't mention any {thing} I could point to.",
        ),
        refusal=True,
    ),
)

JOKES = (
    "Why did the notebook go to therapy? It had too many unresolved issues.",
    "What do you call a fake noodle? An impasta.",
    "Why did the scarecrow win an award? He was outstanding in his field.",
    "I'm reading a book about anti-gravity. It's impossible to put down.",
    "Why did the bicycle fall over? It was two tired.",
    "What do you call a bear with no teeth? A gummy bear.",
    "Parallel lines have so much in common. It's a shame they'll never meet.",
    "I'd tell you a joke about paper, but it's tearable.",
    "What did the ocean say to the beach? Nothing, it just waved.",
    "Why don't eggs tell jokes? They'd crack each other up.",
    "Why did the tomato blush? It saw the salad dressing.",
    "What do you call a sleeping dinosaur? A dino-snore.",
)
ANOTHER = ("another one", "another!", "one more", "tell me another", "more jokes please")
ANOTHER_OPENINGS = ("", "Okay: ", "Here's another: ")  # how another joke is told
BY_NAME = {t.name: t for t in TOPICS}


@dataclass(frozen=True)
class Talk:
    """One small-talk exchange."""

    topic: str
    prompt: str
    reply: str
    refusal: bool


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiou])")


def _format(template: str, fields: dict[str, str]) -> str:
    """template with its slots filled, "a" said "an" before a filler's vowel ("an album")."""
    return _A_BEFORE_VOWEL.sub(r"\1n ", template.format(**fields))


def _fill(template: str, rng: random.Random, fixed: dict[str, str] | None = None) -> str:
    fields = dict(fixed or {})
    for name, options in FILLERS.items():
        if "{" + name + "}" in template and name not in fields:
            fields[name] = rng.choice(options)
    if "{joke}" in template and "joke" not in fields:
        fields["joke"] = rng.choice(JOKES)
    return _format(template, fields)


def typed(prompt: str, rng: random.Random) -> str:
    """prompt as people type it: sometimes with a capital, sometimes without its '?'."""
    r = rng.random()
    if r < 0.3:
        prompt = prompt[0].upper() + prompt[1:]
    elif r < 0.4 and prompt.endswith("?"):
        prompt = prompt[:-1]
    return prompt


def talk(rng: random.Random, topic: str | None = None) -> Talk:
    """One exchange of the given topic (or a random one); the prompt's fillers carry
    into the reply where both use them ("a podcast" asked, "a podcast" said)."""
    t = BY_NAME[topic] if topic else rng.choice(TOPICS)
    shared: dict[str, str] = {}
    template = rng.choice(t.prompts)
    for name, options in FILLERS.items():
        if "{" + name + "}" in template:
            shared[name] = rng.choice(options)
    prompt = typed(_format(template, shared), rng)
    reply = _fill(rng.choice(t.replies), rng, shared)
    return Talk(t.name, prompt, reply, t.refusal)


def another_joke(first: str, rng: random.Random) -> Talk:
    """ "another one" after a joke: a different joke."""
    joke = rng.choice([j for j in JOKES if j not in first])
    return Talk("joke", typed(rng.choice(ANOTHER), rng), rng.choice(ANOTHER_OPENINGS) + joke, False)


def every_fill(template: str, fixed: dict[str, str] | None = None) -> list[str]:
    """template with each choice of its slots' fillers (FILLERS, and {joke} from JOKES);
    a slot in fixed has that filler only."""
    combos: list[dict[str, str]] = [{}]
    for name, options in (*FILLERS.items(), ("joke", JOKES)):
        if "{" + name + "}" in template:
            choices = [fixed[name]] if fixed and name in fixed else options
            combos = [{**c, name: v} for c in combos for v in choices]
    return [_format(template, c) for c in combos]


def _prompts(topics) -> list[str]:
    """Every prompt the topics' templates can make, untyped, and another joke's."""
    return [p for t in topics for template in t.prompts for p in every_fill(template)] + list(ANOTHER)


def all_prompts() -> list[str]:
    """Every prompt the templates can make, untyped (what a test checks against the eval)."""
    return _prompts(TOPICS)


def chat_prompts() -> list[str]:
    """Every prompt of the topics that look nothing up (not the refusals, whose question
    the notes may answer): chat sends a message like one of these no notes
    (bytechat.notes.retrieval.is_small_talk)."""
    return _prompts(t for t in TOPICS if not t.refusal)


def chat_topics() -> dict[str, list[str]]:
    """Each topic that looks nothing up, with every prompt it can make (another joke's
    under "joke"): what bytechat.notes.intent learns a small talk's act from."""
    topics = {t.name: [p for template in t.prompts for p in every_fill(template)] for t in TOPICS if not t.refusal}
    topics["joke"] += ANOTHER
    return topics


def said_fillers(name: str, prompt: str) -> dict[str, str]:
    """The fillers a message of the topic says, for the slots the topic's prompts and
    replies share ("morning!" says the time "morning"): talk() carries such a filler from
    the prompt into the reply, and so must a reply chosen for a message."""
    topic = BY_NAME[name]
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    fixed = {}
    for slot, options in FILLERS.items():
        used = "{" + slot + "}"
        if any(used in p for p in topic.prompts) and any(used in r for r in topic.replies):
            said = [o for o in options if set(o.lower().split()) <= words]
            if len(said) == 1:
                fixed[slot] = said[0]
    return fixed


def topic_replies(name: str, prompt: str | None = None, fixed: dict[str, str] | None = None) -> list[str]:
    """Every reply the topic's templates can make (each filler choice); a joke's
    includes another joke's. prompt: the message replied to, whose fillers the reply
    keeps (said_fillers); or those fillers, fixed."""
    if prompt:
        fixed = said_fillers(name, prompt)
    said = [r for template in BY_NAME[name].replies for r in every_fill(template, fixed)]
    if name == "joke":
        said += [opening + joke for opening in ANOTHER_OPENINGS for joke in JOKES]
    return said


def refusal_replies() -> list[str]:
    """Every reply of the refusals (each filler choice): what training answers a question
    with where retrieval found nothing and the world, not the notes, would know."""
    return _replies(t for t in TOPICS if t.refusal)


def all_replies() -> list[str]:
    """Every reply the templates can make (each filler choice), another joke's included:
    the sentences faithful decoding lets the bot say (bytechat.serve.copying)."""
    return _replies(TOPICS) + [opening + joke for opening in ANOTHER_OPENINGS for joke in JOKES]


def _replies(topics) -> list[str]:
    """Every reply the topics' templates can make, each filler choice."""
    return [r for t in topics for template in t.replies for r in every_fill(template)]
