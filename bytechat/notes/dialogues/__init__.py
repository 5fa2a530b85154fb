"""The training dialogues' answers: what a reply says and how (bytechat.notes.grounded builds
the dialogues and lays them out as chat does).

    spans         the part of a block that answers (a value's first clause, the open
                  TODOs, the sentence that holds a word); always a substring of the block
    frames        training questions and answer sentences by question type (when, how
                  many, who, where, what, yes/no, todos, a word's gist), many variants each
    summary       "tell me about X": the page's 2-4 most informative blocks shown
    conversation  2-4 turn dialogues: follow-ups with pronouns, thanks, a new topic
    everyday      small talk: greetings, thanks, who/what are you, feelings, jokes,
                  friendly refusals of what the notes cannot know

Nothing here reads the eval's questions or templates (bytechat.eval.phrasings, the
hand-written graphs under data/): a test checks the imports, another that no held-out
template or eval prompt is a training line.
"""
