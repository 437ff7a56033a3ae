"""Who the customers are: country, city, time zone, locale, names, contacts, birthdays.

Names are transliterated to ASCII so emails built from them are valid as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orbita.simulation.calendar import pick
from orbita.simulation.records import DAY_MS, Bools, Column, Int64s, Kind, text


@dataclass(frozen=True, slots=True)
class Country:
    code: str
    weight: float
    timezone: str
    utc_offset: int  # standard time, hours
    locale: str
    phone_prefix: str
    cities: tuple[str, ...]
    female: tuple[str, ...]
    male: tuple[str, ...]
    surnames: tuple[str, ...]


_SLAVIC_F = ("Olena", "Iryna", "Kateryna", "Anna", "Mariia", "Sofiia", "Yuliia", "Natalia")
_SLAVIC_M = ("Oleksandr", "Andrii", "Dmytro", "Serhii", "Maksym", "Ivan", "Taras", "Bohdan")

COUNTRIES: tuple[Country, ...] = (
    Country(
        "UA", 0.34, "Europe/Kyiv", 2, "uk-UA", "+380",
        ("Kyiv", "Lviv", "Kharkiv", "Odesa", "Dnipro", "Vinnytsia", "Zaporizhzhia",
         "Ivano-Frankivsk"),
        (*_SLAVIC_F, "Oksana", "Tetiana", "Viktoriia", "Daryna"),
        (*_SLAVIC_M, "Yaroslav", "Mykola", "Vasyl", "Artem"),
        ("Shevchenko", "Kovalenko", "Bondarenko", "Tkachenko", "Kravchenko", "Oliinyk",
         "Melnyk", "Boiko", "Moroz", "Lysenko", "Marchenko", "Savchenko"),
    ),
    Country(
        "PL", 0.24, "Europe/Warsaw", 1, "pl-PL", "+48",
        ("Warszawa", "Krakow", "Wroclaw", "Poznan", "Gdansk", "Lodz", "Katowice", "Lublin"),
        ("Anna", "Katarzyna", "Magdalena", "Agnieszka", "Joanna", "Zofia", "Julia", "Maja"),
        ("Piotr", "Krzysztof", "Tomasz", "Pawel", "Michal", "Jakub", "Kacper", "Marcin"),
        ("Nowak", "Kowalski", "Wisniewski", "Wojcik", "Kaminski", "Lewandowski", "Zielinski",
         "Szymanski", "Wozniak", "Dabrowski"),
    ),
    Country(
        "DE", 0.14, "Europe/Berlin", 1, "de-DE", "+49",
        ("Berlin", "Hamburg", "Munchen", "Koln", "Frankfurt", "Leipzig", "Dresden", "Stuttgart"),
        ("Mia", "Emma", "Hannah", "Lena", "Laura", "Sarah", "Julia", "Lea"),
        ("Lukas", "Leon", "Paul", "Jonas", "Felix", "Maximilian", "Tim", "Jan"),
        ("Muller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Hoffmann", "Koch"),
    ),
    Country(
        "CZ", 0.08, "Europe/Prague", 1, "cs-CZ", "+420",
        ("Praha", "Brno", "Ostrava", "Plzen", "Olomouc", "Liberec"),
        ("Tereza", "Eliska", "Anna", "Natalie", "Karolina", "Adela"),
        ("Jakub", "Jan", "Tomas", "Matej", "Lukas", "Ondrej"),
        ("Novak", "Svoboda", "Novotny", "Dvorak", "Cerny", "Prochazka", "Kucera", "Vesely"),
    ),
    Country(
        "RO", 0.08, "Europe/Bucharest", 2, "ro-RO", "+40",
        ("Bucuresti", "Cluj-Napoca", "Timisoara", "Iasi", "Constanta", "Brasov"),
        ("Maria", "Elena", "Ioana", "Andreea", "Alexandra", "Ana"),
        ("Andrei", "Alexandru", "Mihai", "Stefan", "Ionut", "Gabriel"),
        ("Popescu", "Ionescu", "Popa", "Stan", "Dumitru", "Constantin", "Stoica", "Gheorghe"),
    ),
    Country(
        "LT", 0.05, "Europe/Vilnius", 2, "lt-LT", "+370",
        ("Vilnius", "Kaunas", "Klaipeda", "Siauliai"),
        ("Ieva", "Gabija", "Emilija", "Ugne", "Austeja"),
        ("Jonas", "Lukas", "Matas", "Dominykas", "Tomas"),
        ("Kazlauskas", "Jankauskas", "Petrauskas", "Stankevicius", "Vasiliauskas"),
    ),
    Country(
        "GB", 0.07, "Europe/London", 0, "en-GB", "+44",
        ("London", "Manchester", "Birmingham", "Leeds", "Glasgow", "Bristol", "Edinburgh"),
        ("Olivia", "Amelia", "Isla", "Ava", "Emily", "Sophie", "Grace", "Lily"),
        ("Oliver", "George", "Harry", "Jack", "Charlie", "Thomas", "James", "William"),
        ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
         "Evans", "Walker"),
    ),
)  # fmt: skip

EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "ukr.net")
EMAIL_DOMAIN_WEIGHTS = (0.55, 0.14, 0.07, 0.1, 0.04, 0.1)
GENDERS = ("female", "male", "other")


@dataclass(frozen=True, slots=True)
class People:
    """Customer-level demographics for one chunk; `country` indexes COUNTRIES."""

    country: Int64s
    gender: Int64s  # indexes GENDERS
    age: Int64s
    traits: dict[str, Column]

    @property
    def utc_offset(self) -> Int64s:
        offsets = np.array([c.utc_offset for c in COUNTRIES], dtype=np.int64)
        return offsets[self.country]


def sample_people(
    rng: np.random.Generator,
    *,
    customers: Int64s,
    signed_up: Int64s,
    female_share: float,
    email_share: float,
    phone_share: float,
    telegram_share: float,
    channels: tuple[tuple[str, float], ...],
) -> People:
    """Demographics and contacts; `customers` are the global numbers (they make emails unique)."""
    n = len(customers)
    country = pick(rng, [c.weight for c in COUNTRIES], n)
    gender = pick(rng, (female_share, 1 - female_share - 0.02, 0.02), n)
    # Ages skew to 25-40 for online shoppers and bank app users alike.
    age = np.clip(np.round(rng.gamma(7.5, 4.6, size=n) + 2), 18, 85).astype(np.int64)

    first_names: list[str] = []
    last_names: list[str] = []
    cities: list[str] = []
    emails: list[str | None] = []
    phones: list[str | None] = []
    u_first, u_last, u_city = rng.random(n), rng.random(n), rng.random(n)
    email_style = rng.integers(0, 4, size=n)
    domain = pick(rng, EMAIL_DOMAIN_WEIGHTS, n)
    has_email = rng.random(n) < email_share
    has_phone = rng.random(n) < phone_share
    phone_digits = rng.integers(10_000_000, 99_999_999, size=n)
    for i in range(n):
        c = COUNTRIES[int(country[i])]
        names = c.female if gender[i] == 0 or (gender[i] == 2 and u_first[i] < 0.5) else c.male
        first = names[int(u_first[i] * len(names))]
        last = c.surnames[int(u_last[i] * len(c.surnames))]
        first_names.append(first)
        last_names.append(last)
        cities.append(c.cities[min(int(u_city[i] ** 1.6 * len(c.cities)), len(c.cities) - 1)])
        number = int(customers[i]) + 1
        local = (
            f"{first}.{last}{number}",
            f"{first[0]}{last}{number}",
            f"{last}.{first}{number}",
            f"{first}{number}",
        )[int(email_style[i])].lower()
        emails.append(f"{local}@{EMAIL_DOMAINS[int(domain[i])]}" if has_email[i] else None)
        phones.append(f"{c.phone_prefix}{int(phone_digits[i])}" if has_phone[i] else None)

    telegram = rng.random(n) < telegram_share
    chat_ids = rng.integers(100_000_000, 7_000_000_000, size=n)
    born = signed_up - (age * 365.25 * DAY_MS).astype(np.int64) - rng.integers(0, 365, n) * DAY_MS
    channel = pick(rng, [w for _, w in channels], n)
    traits: dict[str, Column] = {
        "email": _strings(emails),
        "phone": _strings(phones),
        "telegram_chat_id": Column(Kind.ID, chat_ids, telegram),
        "timezone": text(country, [c.timezone for c in COUNTRIES]),
        "locale": text(country, [c.locale for c in COUNTRIES]),
        "first_name": _strings(first_names),
        "last_name": _strings(last_names),
        "gender": text(gender, GENDERS),
        "birthday": Column(Kind.DATE, born),
        "country": text(country, [c.code for c in COUNTRIES]),
        "city": _strings(cities),
        "acquisition_channel": text(channel, [name for name, _ in channels]),
    }
    return People(country=country, gender=gender, age=age, traits=traits)


def _strings(values: Sequence[str | None]) -> Column:
    array = np.array(values, dtype=object)
    valid: Bools = np.array([v is not None for v in values], dtype=np.bool_)
    return Column(Kind.STR, array, None if valid.all() else valid)
