"""Generate ``bench/data/memory_suite.json``: the synthetic long-term memory suite.

In the spirit of LongMemEval and LoCoMo, scored offline by retrieval (no LLM judge):
40 users, each with 6 sessions a few days apart. A session mixes the user's facts (family,
work, places, pets, schedules, preferences) with small talk and facts about *other* people
that share words with the user's own (the hard distractors). Some preferences change in a
later session (the old one is superseded), and some questions need two sessions.

Each question names the message(s) that answer it (``evidence``) and its kind:
``single`` (one fact), ``multi`` (two facts from different sessions), ``update`` (a
changed preference: the answer is the newest value, ``current``; the older value is
``stale``). Deterministic: ``python bench/make_memory_suite.py`` rewrites the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).parent / "data" / "memory_suite.json"

NAMES = [
    "Maya",
    "Leo",
    "Nora",
    "Omar",
    "Ines",
    "Kai",
    "Zoe",
    "Ravi",
    "Lena",
    "Tomas",
    "Aiko",
    "Bruno",
    "Clara",
    "Dev",
    "Elif",
    "Farid",
]
CITIES = [
    "Lisbon",
    "Oslo",
    "Kyoto",
    "Denver",
    "Nairobi",
    "Porto",
    "Tallinn",
    "Quito",
    "Hanoi",
    "Lyon",
    "Perth",
    "Cork",
]
JOBS = [
    ("nurse", "St. Mary's hospital"),
    ("data engineer", "a logistics startup"),
    ("teacher", "a primary school"),
    ("architect", "a small studio"),
    ("chef", "an Italian restaurant"),
    ("accountant", "a bank"),
    ("pilot", "a regional airline"),
    ("vet", "an animal clinic"),
]
PETS = [
    ("dog", "Biscuit"),
    ("cat", "Pepper"),
    ("parrot", "Kiwi"),
    ("rabbit", "Clover"),
    ("dog", "Rocket"),
    ("cat", "Mochi"),
]
HOBBIES = [
    "climbing",
    "pottery",
    "chess",
    "salsa dancing",
    "birdwatching",
    "sourdough baking",
    "cycling",
]
DRINKS = ["green tea", "black coffee", "oat-milk latte", "sparkling water", "hot chocolate", "chai"]
CUISINES = ["Thai", "Mexican", "Ethiopian", "Japanese", "Lebanese", "Georgian", "Peruvian"]
MUSIC = ["jazz", "techno", "folk", "classical", "hip hop", "bossa nova"]
SMALL_TALK = [
    "Thanks, that was helpful.",
    "The weather has been strange this week.",
    "Can you remind me later about that article?",
    "I watched a documentary about octopuses yesterday.",
    "My laptop battery is dying again.",
    "Traffic was terrible this morning.",
    "I think I need a holiday soon.",
    "That joke was pretty funny.",
    "I'm trying to drink more water.",
    "Let's continue tomorrow.",
    "The train was late again today.",
    "I finally cleaned my desk.",
]
OTHERS = ["my colleague", "my neighbour", "my cousin", "my friend Sam", "my boss"]


def user(rng: random.Random, uid: int) -> dict[str, object]:
    messages: list[dict[str, object]] = []
    questions: list[dict[str, object]] = []
    day = 86400.0
    start = 1_700_000_000.0 + uid * 1000

    def say(session: int, text: str) -> int:
        messages.append(
            {"session": session, "ts": start + session * 3 * day + len(messages) * 60, "text": text}
        )
        return len(messages) - 1

    sister, brother = rng.sample(NAMES, 2)
    home, born, trip = rng.sample(CITIES, 3)
    job, employer = rng.choice(JOBS)
    pet, pet_name = rng.choice(PETS)
    hobby = rng.choice(HOBBIES)
    drink_old, drink_new = rng.sample(DRINKS, 2)
    food_old, food_new = rng.sample(CUISINES, 2)
    music_old, music_new = rng.sample(MUSIC, 2)
    month = rng.choice(["January", "March", "May", "July", "September", "November"])
    age = rng.randint(5, 16)

    plan = [
        (
            0,
            f"My sister {sister} is {age} years old.",
            "single",
            ["How old is my sister?", "What is my sister's name?"],
        ),
        (0, f"I live in {home} these days.", "single", ["Which city do I live in?"]),
        (1, f"I work as a {job} at {employer}.", "single", ["What is my job?", "Where do I work?"]),
        (
            1,
            f"I have a {pet} called {pet_name}.",
            "single",
            ["What is my pet's name?", "What kind of animal do I have?"],
        ),
        (2, f"I was born in {born}.", "single", ["Where was I born?"]),
        (
            2,
            f"My brother {brother} is visiting in {month}.",
            "single",
            ["When is my brother coming to visit?"],
        ),
        (3, f"On weekends I go {hobby}.", "single", ["What do I do on weekends?"]),
        (
            3,
            f"I'm planning a trip to {trip} next spring.",
            "single",
            ["Where am I travelling next spring?"],
        ),
    ]
    evidence: dict[str, int] = {}
    for session, text, kind, asks in plan:
        i = say(session, text)
        evidence[text] = i
        questions.extend({"question": ask, "kind": kind, "evidence": [i]} for ask in asks)
    # preferences, changed later
    for old, new, topic, ask, s_old, s_new in [
        (drink_old, drink_new, "drink", "What is my favourite drink now?", 0, 4),
        (food_old, food_new, "cuisine", "Which cuisine do I like best at the moment?", 1, 5),
        (music_old, music_new, "music", "What music am I into these days?", 2, 5),
    ]:
        a = say(s_old, f"My favourite {topic} is {old}.")
        b = say(s_new, f"These days my favourite {topic} is {new}, not {old} any more.")
        questions.append(
            {
                "question": ask,
                "kind": "update",
                "evidence": [b],
                "stale": [a],
                "subject": "user",
                "relation": f"favourite_{topic}",
                "current": new,
                "old": old,
            }
        )
    # two-session questions
    questions.append(
        {
            "question": "What are the names of my siblings?",
            "kind": "multi",
            "evidence": [evidence[plan[0][1]], evidence[plan[5][1]]],
        }
    )
    questions.append(
        {
            "question": "Where do I live and where was I born?",
            "kind": "multi",
            "evidence": [evidence[plan[1][1]], evidence[plan[4][1]]],
        }
    )
    # distractors: small talk and other people's look-alike facts
    for session in range(6):
        for text in rng.sample(SMALL_TALK, 5):
            say(session, text)
        who = rng.choice(OTHERS)
        say(
            session,
            rng.choice(
                [
                    f"{who.capitalize()} has a {rng.choice(PETS)[0]} called {rng.choice(PETS)[1]}.",
                    f"{who.capitalize()} lives in {rng.choice(CITIES)}.",
                    f"{who.capitalize()} works as a {rng.choice(JOBS)[0]}.",
                    f"{who.capitalize()}'s favourite drink is {rng.choice(DRINKS)}.",
                    f"{who.capitalize()} is travelling to {rng.choice(CITIES)} in {month}.",
                ]
            ),
        )
    return {"user": f"user:{uid}", "messages": messages, "questions": questions}


def main() -> None:
    rng = random.Random(11)
    users = [user(rng, uid) for uid in range(40)]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"version": 1, "users": users}, indent=1) + "\n")
    total = sum(len(u["questions"]) for u in users)  # type: ignore[arg-type]
    print(json.dumps({"file": str(OUT), "users": len(users), "questions": total}))


if __name__ == "__main__":
    main()
