"""Fixed vocabulary of the sample shop (countries, names, products) and value helpers.

Shared by the seeder and the workload so both draw from the same, deterministic
word lists.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

#: (code, name, region); ``region`` is NULL for one country on purpose
COUNTRIES: tuple[tuple[str, str, str | None], ...] = (
    ("DE", "Germany", "Europe"),
    ("FR", "France", "Europe"),
    ("IT", "Italy", "Europe"),
    ("ES", "Spain", "Europe"),
    ("NL", "Netherlands", "Europe"),
    ("PL", "Poland", "Europe"),
    ("GB", "United Kingdom", "Europe"),
    ("US", "United States", "Americas"),
    ("CA", "Canada", "Americas"),
    ("BR", "Brazil", "Americas"),
    ("JP", "Japan", "Asia"),
    ("IN", "India", "Asia"),
    ("AU", "Australia", "Oceania"),
    ("ZA", "South Africa", None),
)

FIRST_NAMES = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Edsger", "Donald", "Margaret",
               "Ken", "Dennis", "Frances", "John", "Radia", "Tim", "Sophie", "Niklaus",
               "Katherine", "Guido", "Yukihiro", "Anita")
LAST_NAMES = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Dijkstra", "Knuth",
              "Hamilton", "Thompson", "Ritchie", "Allen", "McCarthy", "Perlman", "Berners-Lee",
              "Wilson", "Wirth", "Johnson", "van Rossum", "Matsumoto", "Borg")
CITIES = ("Berlin", "Paris", "Milan", "Madrid", "Utrecht", "Krakow", "Leeds", "Austin",
          "Toronto", "Recife", "Osaka", "Pune", "Perth", "Durban")
STREETS = ("Main St", "High St", "Station Rd", "Church Ln", "Mill Rd", "Park Ave", "Oak Way")
PRODUCT_WORDS = ("Widget", "Gadget", "Sprocket", "Gizmo", "Doohickey", "Flange", "Grommet",
                 "Bracket", "Lever", "Valve")
PRODUCT_ADJ = ("Mini", "Pro", "Max", "Eco", "Classic", "Turbo", "Smart", "Heavy")
TAGS = ("new", "sale", "eco", "bulk", "fragile", "gift", "outdoor", "kids")
COLORS = ("red", "green", "blue", "black", "white")
TIERS = ("standard", "silver", "gold")
STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
METHODS = ("card", "paypal", "transfer", "voucher")

#: logical clock origin: seeded rows are placed in the 90 days after it,
#: workload rows after that (deterministic, independent of the wall clock)
BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)
SEED_SPAN = timedelta(days=90)

#: size in characters of a large (TOASTed) text value: random hex, so pglz
#: cannot compress it and PostgreSQL stores it out of line
LARGE_TEXT_CHARS = 4096

CENT = Decimal("0.01")


def large_text(rng: random.Random) -> str:
    """An incompressible ~4 kB text (random hex) that PostgreSQL TOASTs out of line."""
    return rng.randbytes(LARGE_TEXT_CHARS // 2).hex()


def money(rng: random.Random, low: int, high: int) -> Decimal:
    """A price between ``low`` and ``high`` with two decimals."""
    return (Decimal(rng.randrange(low * 100, high * 100)) / 100).quantize(CENT)


def person_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def email_for(name: str, n: int) -> str:
    """A mixed-case e-mail address (views often lower() it)."""
    first, _, last = name.partition(" ")
    return f"{first}.{last.replace(' ', '')}{n}@Example.COM"


def product_name(rng: random.Random) -> str:
    return f"{rng.choice(PRODUCT_ADJ)} {rng.choice(PRODUCT_WORDS)}"


def product_tags(rng: random.Random) -> list[str]:
    return sorted(rng.sample(TAGS, rng.randint(0, 3)))


def product_attributes(rng: random.Random) -> dict[str, object] | None:
    """jsonb attributes: only ints, strings, booleans and nested objects (no floats)."""
    if rng.random() < 0.1:
        return None
    return {"color": rng.choice(COLORS), "weight_g": rng.randint(10, 5000),
            "fragile": rng.random() < 0.2,
            "dims": {"w": rng.randint(1, 50), "h": rng.randint(1, 50)}}


def timestamp(base: datetime, span: timedelta, rng: random.Random) -> datetime:
    """A UTC instant in [base, base+span) with microsecond precision."""
    micros = int(span.total_seconds() * 1_000_000)
    return base + timedelta(microseconds=rng.randrange(micros))
