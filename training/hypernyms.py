"""Hypernym filter of the ``triplets`` command: which names are kinds of which, to drop ambiguous name pairs.

Hypernyms: no WordNet (nothing is downloaded). A small built-in table of common GQA/COCO kinds
(:data:`BUILTIN_HYPERNYMS`, closed transitively) stands in for it, and ``--hypernyms FILE`` (a JSON list of
``[general, specific]`` pairs) extends it. A hypernym clash (one name is a kind of another name in the same image,
e.g. "animal" and "dog") drops both names, as the official WordNet filter does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .geometry import normalise_name
from .json_fields import read_json

_BUILTIN_HYPERNYM_TABLE = """
animal: dog, cat, horse, cow, sheep, bird, elephant, giraffe, zebra, bear, animals, deer, goat, pig, monkey, lion,
    tiger, rabbit, mouse, squirrel, fish, calf, lamb, pony, donkey, puppy, kitten, cattle, duck, goose, chicken
bird: duck, goose, pigeon, seagull, gull, parrot, chicken, owl, eagle, swan, crow
dog: puppy
cat: kitten
horse: pony, foal
cow: calf
sheep: lamb
person: man, woman, boy, girl, child, kid, lady, guy, player, skier, surfer, skateboarder, snowboarder, baby, men,
    women, people, tennis player, batter, catcher, pitcher, umpire, rider, driver, passenger, spectator, worker,
    chef, officer, police officer, soldier, student, adult, toddler, biker
people: man, woman, boy, girl, child, kid, lady, guy, men, women, children, crowd
child: boy, girl, baby, toddler, kid
player: tennis player, batter, catcher, pitcher, baseball player, soccer player
vehicle: car, bus, truck, motorcycle, bike, bicycle, train, van, taxi, airplane, boat, suv, jeep, tractor,
    scooter, trailer, ambulance, cab, minivan, motorbike, plane, jet, ship, tram, wagon, cart
car: taxi, cab, suv, jeep, minivan, police car
aircraft: airplane, plane, jet, helicopter
boat: ship, sailboat, canoe, kayak, yacht
furniture: chair, table, couch, sofa, bed, desk, shelf, cabinet, bench, stool, dresser, drawer, bookshelf,
    armchair, nightstand, cupboard, ottoman
seat: chair, bench, stool, couch, sofa, armchair
table: desk, coffee table, dining table, nightstand
food: fruit, vegetable, apple, banana, orange, pizza, sandwich, bread, cake, donut, meat, cheese, broccoli,
    carrot, hot dog, dessert, salad, rice, egg, fries, tomato, potato, onion, lettuce, lemon, strawberry, grapes,
    sausage, pepperoni, bun, muffin, cookie, pastry, soup, chicken, pasta, noodles
fruit: apple, banana, orange, lemon, lime, grapes, grape, strawberry, pear, peach, pineapple, watermelon, melon,
    cherry, kiwi, tomato
vegetable: carrot, broccoli, onion, lettuce, potato, pepper, cucumber, spinach, cabbage, celery, mushroom,
    vegetables
dessert: cake, donut, ice cream, cookie, pie, cupcake
plant: tree, flower, bush, grass, shrub, flowers, plants, trees, leaves, palm tree, weeds, potted plant,
    houseplant
tree: palm tree, pine tree, trees
flower: rose, tulip, daisy, flowers
clothing: shirt, jacket, coat, pants, dress, hat, shoe, shoes, jeans, shorts, skirt, sweater, hoodie, cap, helmet,
    glove, gloves, sock, socks, boot, boots, scarf, tie, uniform, vest, t-shirt, jersey, sneakers, sneaker,
    sandal, sandals, suit, top, clothes, beanie, glasses, sunglasses
clothes: shirt, jacket, coat, pants, dress, jeans, shorts, skirt, sweater, t-shirt
shirt: t-shirt, jersey, polo shirt, tank top
hat: cap, helmet, beanie, baseball cap, cowboy hat
shoe: sneaker, boot, sandal, heel, sneakers, boots, sandals
footwear: shoe, shoes, sneaker, sneakers, boot, boots, sandal, sandals, slipper
building: house, tower, church, skyscraper, barn, shed, hotel, apartment, castle, station, garage, store, shop,
    restaurant, clock tower, lighthouse
container: box, bag, bottle, cup, bowl, jar, basket, bucket, can, vase, pot, glass, mug, crate, carton, tray,
    pitcher, jug, suitcase, backpack, purse, handbag, trash can, bin
bag: backpack, purse, handbag, suitcase, luggage, shopping bag, plastic bag
dish: plate, bowl, saucer, platter
tableware: plate, bowl, cup, mug, glass, fork, knife, spoon, utensil, saucer
utensil: fork, knife, spoon, spatula, ladle, chopsticks
device: phone, cell phone, laptop, computer, monitor, keyboard, mouse, remote, remote control, tv, television,
    screen, camera, tablet, speaker, microwave, oven, refrigerator, fridge, toaster, clock, lamp
computer: laptop, desktop, tablet
phone: cell phone, cellphone, smartphone, telephone
appliance: microwave, oven, refrigerator, fridge, toaster, stove, dishwasher, washing machine, blender, sink
light: lamp, street light, streetlight, traffic light, headlight, light bulb, ceiling light, chandelier, lights
sign: street sign, stop sign, road sign, traffic sign, signs
structure: building, bridge, tower, fence, wall, pole, house
body part: hand, arm, leg, head, face, eye, ear, nose, mouth, hair, foot, finger, neck, shoulder, knee, beard,
    teeth
instrument: guitar, piano, violin, drum
ball: tennis ball, soccer ball, baseball, basketball, football, volleyball
toy: teddy bear, doll, kite, frisbee, stuffed animal, ball
equipment: racket, tennis racket, bat, baseball bat, skis, ski, snowboard, surfboard, skateboard, glove,
    baseball glove, helmet, ball, frisbee, kite
board: surfboard, skateboard, snowboard, cutting board, whiteboard
window: windows, windshield, window pane
vegetation: grass, bush, bushes, trees, tree, plant, plants, shrub, weeds
road: street, highway, lane
water: ocean, sea, lake, river, pond
ground: dirt, sand, soil, mud, gravel
"""


def _parse_hypernym_table(text: str) -> MappingProxyType[str, tuple[str, ...]]:
    """Parse "general: specific, specific, ..." lines (continuation lines start with spaces)."""
    table: dict[str, tuple[str, ...]] = {}
    general = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            general, _, rest = line.partition(":")
            table[general] = ()
        else:
            rest = line
        table[general] += tuple(x.strip() for x in rest.split(",") if x.strip())
    return MappingProxyType(table)


BUILTIN_HYPERNYMS: MappingProxyType[str, tuple[str, ...]] = _parse_hypernym_table(_BUILTIN_HYPERNYM_TABLE)
"""General name -> more specific names. A pair of names clashes when one is (transitively) a kind of the other."""


@dataclass(frozen=True)
class HypernymTable:
    """Which names are kinds of which (closed transitively), to drop ambiguous name pairs.

    Attributes:
        ancestors: name -> every more general name it is a kind of.
        source: What the table was built from, for ``summary.json``.
    """

    ancestors: Mapping[str, frozenset[str]]
    source: str

    def clashes(self, a: str, b: str) -> bool:
        """True when one of the two (different) names is a kind of the other."""
        return b in self.ancestors.get(a, frozenset()) or a in self.ancestors.get(b, frozenset())

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]], source: str) -> HypernymTable:
        """Build the table from ``(general, specific)`` pairs."""
        parents: dict[str, set[str]] = defaultdict(set)
        for general, specific in pairs:
            g, s = normalise_name(general), normalise_name(specific)
            if g != s:
                parents[s].add(g)
        ancestors: dict[str, frozenset[str]] = {}
        for name in parents:
            seen: set[str] = set()
            stack = list(parents[name])
            while stack:
                p = stack.pop()
                if p not in seen:
                    seen.add(p)
                    stack.extend(parents.get(p, ()))
            seen.discard(name)
            ancestors[name] = frozenset(seen)
        return cls(ancestors=MappingProxyType(ancestors), source=source)


def builtin_hypernym_pairs() -> list[tuple[str, str]]:
    """The built-in table as ``(general, specific)`` pairs."""
    return [(g, s) for g, specifics in BUILTIN_HYPERNYMS.items() for s in specifics]


def load_hypernyms(path: str | Path | None) -> HypernymTable:
    """The built-in hypernym table, extended by a JSON file of ``[general, specific]`` pairs when given.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a JSON list of two-string lists; the message names the file and the entry.
    """
    pairs = builtin_hypernym_pairs()
    if path is None:
        return HypernymTable.build(pairs, "builtin")
    path = Path(path)
    data = read_json(path, "hypernyms file")
    if not isinstance(data, list):
        raise ValueError(
            f"Hypernyms file {str(path)!r}: expected a JSON list of [general, specific] pairs, e.g. "
            f'[["animal", "dog"]], got {type(data).__name__}.'
        )
    for i, entry in enumerate(data):
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) and x.strip() for x in entry)):
            raise ValueError(
                f"Hypernyms file {str(path)!r}, entry [{i}]: expected [general, specific] (two non-empty strings), "
                f"got {entry!r}."
            )
        pairs.append((entry[0], entry[1]))
    return HypernymTable.build(pairs, f"builtin + {path.name} ({len(data)} pairs)")


def clashing_names(names: Iterable[str], table: HypernymTable) -> set[str]:
    """Names that are a kind of (or more general than) another name of the same image."""
    unique = sorted(set(names))
    marked: set[str] = set()
    for i, a in enumerate(unique):
        for b in unique[i + 1 :]:
            if table.clashes(a, b):
                marked.update((a, b))
    return marked
