"""Write `sentences.txt`: a few hundred everyday English sentences made from the templates below.

The templates and word lists are this project's own. The output is deterministic (a seeded
shuffle of every combination, duplicates removed, cut to `COUNT` lines), so running it again
writes the same file. `prepare.py` splits the lines into calibration and evaluation sets.
Run: `python3 examples/minilm/make_sentences.py` (standard library only).
"""

import itertools
import random
from pathlib import Path

COUNT = 480
SEED = 7
HERE = Path(__file__).resolve().parent

# Each family: a template and the words its slots take. Every combination is a candidate line.
FAMILIES = [
    (
        "The {thing} in the {room} needs to be {fixed} before {day}.",
        {
            "thing": ["sink", "window", "lamp", "heater", "door handle", "shelf"],
            "room": ["kitchen", "bathroom", "hallway", "spare room", "garage"],
            "fixed": ["repaired", "cleaned", "replaced", "painted"],
            "day": ["Friday", "the weekend", "our guests arrive", "the end of the month"],
        },
    ),
    (
        "{who} took the {transport} to {place} because it was {weather}.",
        {
            "who": ["My sister", "Our neighbour", "The new teacher", "Grandpa", "A friend of mine"],
            "transport": ["bus", "early train", "ferry", "tram", "last taxi"],
            "place": ["the city centre", "the airport", "the coast", "the market", "work"],
            "weather": ["raining hard", "far too cold to cycle", "windy", "snowing"],
        },
    ),
    (
        "Could you {action} the {item} on your way {direction}?",
        {
            "action": ["pick up", "drop off", "buy", "return", "check on"],
            "item": ["bread", "parcel", "library books", "dry cleaning", "spare keys",
                     "birthday card"],
            "direction": ["home", "to the office", "back from the gym", "into town"],
        },
    ),
    (
        "I {feeling} the {meal} we had at the {venue} last {time}.",
        {
            "feeling": ["really enjoyed", "did not like", "still think about", "was surprised by"],
            "meal": ["soup", "curry", "fish and chips", "pasta", "pancakes", "salad"],
            "venue": ["little cafe", "new restaurant", "hotel", "beach bar", "canteen"],
            "time": ["night", "week", "summer", "Sunday"],
        },
    ),
    (
        "The {team} {result} the match after {event} in the {period}.",
        {
            "team": ["home side", "visiting team", "school team", "local club", "youth squad"],
            "result": ["won", "lost", "drew", "nearly lost"],
            "event": ["a late goal", "a missed penalty", "a red card", "a long delay",
                      "an injury"],
            "period": ["first half", "second half", "final minutes", "extra time"],
        },
    ),
    (
        "Please remember to {chore} before you {leave}.",
        {
            "chore": ["water the plants", "feed the cat", "lock the back door",
                      "turn off the oven", "take out the rubbish", "close the windows",
                      "charge your phone", "pack an umbrella"],
            "leave": ["leave for work", "go to bed", "head out tonight", "go on holiday",
                      "pick up the children"],
        },
    ),
    (
        "{who} is learning to {skill} and practises every {when}.",
        {
            "who": ["My brother", "Her daughter", "Our manager", "The old man next door",
                    "My cousin", "Everyone in the class"],
            "skill": ["play the piano", "speak Spanish", "swim", "bake bread", "drive",
                      "knit"],
            "when": ["morning", "evening", "weekend", "lunch break"],
        },
    ),
    (
        "The {shop} on {street} {change} {when}.",
        {
            "shop": ["bakery", "bookshop", "pharmacy", "hardware store", "flower shop",
                     "post office"],
            "street": ["the high street", "the corner", "Mill Lane", "the main road"],
            "change": ["closes early", "opens late", "is having a sale", "is shut for repairs",
                       "has new owners"],
            "when": ["this week", "on Mondays", "until further notice", "during the holidays"],
        },
    ),
    (
        "My {device} {problem} so I {fix}.",
        {
            "device": ["laptop", "phone", "printer", "washing machine", "car", "bicycle"],
            "problem": ["stopped working yesterday", "keeps making a strange noise",
                        "will not turn on", "broke again"],
            "fix": ["called a repair shop", "asked a friend for help", "bought a new one",
                    "looked for a guide online"],
        },
    ),
    (
        "We are planning a {trip} to the {destination} in {month}.",
        {
            "trip": ["short trip", "family holiday", "camping weekend", "day out",
                     "walking tour"],
            "destination": ["mountains", "lake", "seaside", "countryside", "old town",
                            "islands"],
            "month": ["April", "June", "August", "October", "the spring", "the autumn"],
        },
    ),
    (
        "The doctor said I should {advice} and {more}.",
        {
            "advice": ["drink more water", "get more sleep", "walk every day",
                       "eat less sugar", "rest my knee"],
            "more": ["come back in two weeks", "avoid heavy lifting", "take the tablets daily",
                     "stop drinking coffee late", "keep a diary of symptoms"],
        },
    ),
    (
        "{who} forgot {thing} and had to go back {where}.",
        {
            "who": ["Dad", "The courier", "My flatmate", "Our guide", "The plumber"],
            "thing": ["the tickets", "his wallet", "her glasses", "the map", "the keys"],
            "where": ["home", "to the car", "to the hotel", "to the station"],
        },
    ),
]


def all_lines():
    """Every filled template of every family as (family index, line), in a fixed order."""
    lines = []
    for family, (template, slots) in enumerate(FAMILIES):
        names = list(slots)
        for values in itertools.product(*(slots[n] for n in names)):
            lines.append((family, template.format(**dict(zip(names, values)))))
    return lines


def pick(lines, count, seed):
    """A seeded, family-balanced choice of `count` distinct lines, in a shuffled order."""
    rng = random.Random(seed)
    by_family = {}
    for family, line in dict.fromkeys(lines):
        by_family.setdefault(family, []).append(line)
    for group in by_family.values():
        rng.shuffle(group)

    chosen = []
    for row in itertools.zip_longest(*by_family.values()):
        chosen.extend(line for line in row if line is not None)
        if len(chosen) >= count:
            break
    chosen = chosen[:count]
    rng.shuffle(chosen)
    return chosen


def main():
    lines = pick(all_lines(), COUNT, SEED)
    if len(lines) < COUNT:
        raise SystemExit(f"error: the templates make only {len(lines)} distinct lines")

    out = HERE / "sentences.txt"
    partial = out.with_suffix(".txt.partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    partial.replace(out)
    print(f"wrote {len(lines)} sentences to {out}")


if __name__ == "__main__":
    main()
