"""honed's own synthetic demo dataset: coffee-shop messages -> functional representations.

This module owns the demo task (a customer's message becomes `act(slot[value], ...)` in the ViGGO style,
so the `structured` evaluation scores it), the files that hold it, and the recipe that trains on it. It
uses no third-party data and knows nothing about models, training or scoring.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from honed.errors import DataError

DEMO_INSTRUCTION = (
    "Convert the customer's message into a representation act(slot[value], ...). "
    "Acts: order, cancel, ask_price, complain, ask_hours. "
    "Slots: drink, size, quantity, milk, extra, temperature, order_id, issue, day."
)

DRINKS = [
    "latte",
    "cappuccino",
    "americano",
    "espresso",
    "mocha",
    "flat white",
    "cold brew",
    "chai latte",
    "hot chocolate",
    "matcha latte",
    "macchiato",
]
SIZES = ["small", "medium", "large"]
MILKS = ["oat", "almond", "soy", "skim", "whole", "coconut", "lactose-free"]
EXTRAS = [
    "vanilla syrup",
    "caramel syrup",
    "hazelnut syrup",
    "extra shot",
    "whipped cream",
    "cinnamon",
    "honey",
    "chocolate sauce",
    "decaf",
    "sugar",
]
TEMPERATURES = ["iced", "hot", "extra hot"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
ISSUES = {
    "cold": ["the coffee was cold", "my drink arrived stone cold"],
    "wrong drink": ["I got the wrong drink", "this is not the drink I ordered"],
    "missing item": ["one of my drinks was missing", "an item was missing from the bag"],
    "spilled": ["the cup spilled all over the bag", "half of it had spilled"],
    "too sweet": ["it was way too sweet", "the drink is far too sweet"],
    "late": ["it took forever to arrive", "it came almost an hour late"],
    "wrong size": ["I got the wrong size", "I paid for a large but got a small"],
    "burnt": ["the coffee tasted burnt", "it tastes burnt and bitter"],
    "wrong milk": ["you used the wrong milk", "it was made with regular milk, not what I asked for"],
    "overcharged": ["I was charged twice", "I was overcharged"],
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six"]

# Politeness variants wrapped around every sentence; prefixes end a sentence so capitals stay right.
PREFIXES = ["", "", "Hi! ", "Hello. ", "Good morning! ", "Hey there! ", "Excuse me. "]
SUFFIXES = ["", "", " Thanks!", " Thank you.", " Cheers.", " Thanks a lot."]

ORDER_TEMPLATES = [
    "Can I get {item}?",
    "I'd like {item}, please.",
    "Could I have {item}?",
    "{Item}, please.",
    "I'll take {item}.",
    "Let me get {item}.",
    "I want to order {item}.",
    "Can you make me {item}?",
    "{Item} to go, please.",
    "Could you put in an order for {item}?",
    "I'm after {item}.",
]
CANCEL_TEMPLATES = [
    "Please cancel order {order_id}.",
    "I need to cancel my order, number {order_id}.",
    "Can you cancel order #{order_id}?",
    "Cancel {order_id} please, I changed my mind.",
    "Scratch my order {order_id}, I can't make it.",
    "I'd like to cancel order number {order_id}.",
    "Order {order_id}: please don't make it, I have to cancel.",
    "Could you call off order {order_id}?",
    "Never mind order #{order_id}, please cancel it.",
]
PRICE_TEMPLATES = [
    "How much is {item}?",
    "What does {item} cost?",
    "What's the price of {item}?",
    "How much would {item} be?",
    "Quick question: how much for {item}?",
    "Can you tell me the price of {item}?",
    "What do you charge for {item}?",
    "Before I order, how much is {item}?",
    "What would I pay for {item}?",
]
COMPLAIN_TEMPLATES = [
    "My order {order_id} was a mess: {issue}.",
    "Order {order_id}: {issue}.",
    "I'm not happy with order {order_id}, {issue}.",
    "There's a problem with order number {order_id}: {issue}.",
    "About order #{order_id}, {issue}.",
    "{Issue}. That was order {order_id}.",
    "I want to complain about order {order_id} because {issue}.",
    "Sorry to bother you, but with order {order_id} {issue}.",
]
HOURS_TEMPLATES = [
    "Are you open on {day}?",
    "What time do you open on {day}?",
    "When do you close on {day}s?",
    "What are your hours on {day}?",
    "Until when are you open on {day}?",
    "Do you open early on {day}?",
    "Is the shop open this {day}?",
    "What are your opening hours for {day}?",
    "Can I come by on {day}? When are you open?",
]


def _pick_optional(rng: random.Random, values: list[str], chance: float) -> str | None:
    """Return a random value from `values` with probability `chance`, else None."""
    return rng.choice(values) if rng.random() < chance else None


def _article(word: str) -> str:
    """Return "an" before a vowel sound (by first letter), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def _quantity_words(rng: random.Random, quantity: int, next_word: str) -> str:
    """Return the quantity as an article, a number word or digits, so messages vary."""
    if quantity == 1:
        return rng.choice([_article(next_word), _article(next_word), "one", "1"])
    return rng.choice([NUMBER_WORDS[quantity], str(quantity)])


def _with_clause(rng: random.Random, milk: str | None, extra: str | None) -> str:
    """Return the trailing "with oat milk and vanilla syrup" part of an item, or an empty string."""
    parts = []
    if milk:
        # "with oat" reads fine, "with lactose-free" does not.
        bare = [milk] if milk != "lactose-free" else []
        parts.append(rng.choice([f"{milk} milk", f"{milk} milk", *bare]))
    if extra:
        # "some vanilla syrup" reads fine, "some extra shot" does not.
        measured = [f"some {extra}", f"a bit of {extra}"] if extra not in ("extra shot", "decaf") else []
        parts.append(rng.choice([extra, extra, *measured]))
    if not parts:
        return ""
    return " with " + rng.choice([" and ", ", plus "]).join(parts)


def _item_phrase(rng: random.Random, slots: dict[str, Any]) -> str:
    """Return a noun phrase such as "two large iced lattes with oat milk" for an order's slots."""
    quantity = int(slots.get("quantity", 1))
    drink = slots["drink"] + ("s" if quantity > 1 else "")
    words = [w for w in (slots.get("size"), slots.get("temperature"), drink) if w]
    head = " ".join(words)
    counted = f"{_quantity_words(rng, quantity, head)} {head}"
    return counted + _with_clause(rng, slots.get("milk"), slots.get("extra"))


def _order(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Return a message and the slots of an `order` act."""
    drink = rng.choice(DRINKS)
    # "extra hot hot chocolate" or "hot cold brew" would read badly: those drinks only come iced.
    temperatures = ["iced"] if drink in ("hot chocolate", "cold brew") else TEMPERATURES
    slots = {
        "drink": drink,
        "size": _pick_optional(rng, SIZES, 0.7),
        "quantity": rng.choice([1, 1, 1, 2, 2, 3, 4, 5, 6]),
        "milk": _pick_optional(rng, MILKS, 0.4),
        "extra": _pick_optional(rng, EXTRAS, 0.35),
        "temperature": _pick_optional(rng, temperatures, 0.3),
    }
    item = _item_phrase(rng, slots)
    return _fill(rng.choice(ORDER_TEMPLATES), item=item), slots


def _cancel(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Return a message and the slots of a `cancel` act."""
    order_id = str(rng.randint(1000, 9999))
    return _fill(rng.choice(CANCEL_TEMPLATES), order_id=order_id), {"order_id": order_id}


def _ask_price(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Return a message and the slots of an `ask_price` act (size is optional)."""
    drink, size = rng.choice(DRINKS), _pick_optional(rng, SIZES, 0.7)
    head = f"{size} {drink}" if size else drink
    item = rng.choice([f"{_article(head)} {head}", f"{_article(head)} {head}", f"one {head}"])
    return _fill(rng.choice(PRICE_TEMPLATES), item=item), {"drink": drink, "size": size}


def _complain(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Return a message and the slots of a `complain` act."""
    order_id, issue = str(rng.randint(1000, 9999)), rng.choice(sorted(ISSUES))
    message = _fill(rng.choice(COMPLAIN_TEMPLATES), order_id=order_id, issue=rng.choice(ISSUES[issue]))
    return message, {"order_id": order_id, "issue": issue}


def _ask_hours(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """Return a message and the slots of an `ask_hours` act."""
    day = rng.choice(DAYS)
    return _fill(rng.choice(HOURS_TEMPLATES), day=day.capitalize()), {"day": day}


def _fill(template: str, **values: str) -> str:
    """Fill `template`; a capitalised field name ({Item}) gets its value with a capital first letter."""
    capitals = {name.capitalize(): value[:1].upper() + value[1:] for name, value in values.items()}
    return template.format(**values, **capitals)


# Canonical slot order per act: the representation always lists slots in this order.
ACTS: dict[str, tuple[Callable[[random.Random], tuple[str, dict[str, Any]]], tuple[str, ...]]] = {
    "order": (_order, ("drink", "size", "quantity", "milk", "extra", "temperature")),
    "cancel": (_cancel, ("order_id",)),
    "ask_price": (_ask_price, ("drink", "size")),
    "complain": (_complain, ("order_id", "issue")),
    "ask_hours": (_ask_hours, ("day",)),
}
# Orders are the most varied act, so they get a double share of the rows.
_ACT_CYCLE = ["order", "cancel", "ask_price", "order", "complain", "ask_hours"]


def representation(act: str, slots: dict[str, Any]) -> str:
    """Return `act(slot[value], ...)` with the act's slots in canonical order, skipping absent ones."""
    order = ACTS[act][1]
    inside = ", ".join(f"{name}[{slots[name]}]" for name in order if slots.get(name) is not None)
    return f"{act}({inside})"


def make_row(rng: random.Random, act: str) -> dict[str, str]:
    """Return one demo row {"message", "representation", "act"} for `act`."""
    message, slots = ACTS[act][0](rng)
    message = rng.choice(PREFIXES) + message + rng.choice(SUFFIXES)
    return {"message": message, "representation": representation(act, slots), "act": act}


def _make_rows(rng: random.Random, count: int, seen: set[str]) -> list[dict[str, str]]:
    """Return `count` rows whose messages are not in `seen` (which is updated), acts in a fixed cycle."""
    rows: list[dict[str, str]] = []
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise DataError(f"demo data: could not find {count} distinct messages; ask for fewer rows")
        row = make_row(rng, _ACT_CYCLE[len(rows) % len(_ACT_CYCLE)])
        if row["message"] not in seen:
            seen.add(row["message"])
            rows.append(row)
    rng.shuffle(rows)
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    """Write `rows` to `path` as JSON Lines (UTF-8, one object a line)."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_demo_data(
    folder: Path, n_train: int = 600, n_validation: int = 60, seed: int = 0
) -> tuple[Path, Path]:
    """Write `folder/train.jsonl` and `folder/validation.jsonl` (no shared message) and return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    seen: set[str] = set()
    validation = _make_rows(rng, n_validation, seen)
    train = _make_rows(rng, n_train, seen)
    train_path, validation_path = folder / "train.jsonl", folder / "validation.jsonl"
    _write_jsonl(train_path, train)
    _write_jsonl(validation_path, validation)
    return train_path, validation_path


def demo_recipe_dict(folder: Path) -> dict[str, Any]:
    """Return the raw recipe mapping (for `load_recipe(base=...)`) that trains on the demo data in folder."""
    folder = Path(folder).resolve()
    return {
        "name": "demo",
        "model": {"base": "smollm2-135m-instruct"},
        "adapter": "lora",
        "data": {
            "train": str(folder / "train.jsonl"),
            "validation": str(folder / "validation.jsonl"),
            "format": "template",
            "prompt_template": DEMO_INSTRUCTION + "\n\nMessage: {message}",
            "completion_template": "{representation}",
            "slice_field": "act",
            "max_seq_len": 256,
        },
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {
            "lr": 1e-3,
            "batch_size": 8,
            "grad_accum_steps": 1,
            "epochs": 1,
            "lr_warmup_steps": 10,
            "lr_schedule": "cosine",
            "eval_every_steps": 25,
        },
        "eval": {"task": "structured", "max_rows": 60, "max_new_tokens": 48, "batch_size": 20},
    }
