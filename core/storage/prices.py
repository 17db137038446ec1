"""Model prices for the cost column, from the maintained `genai-prices` data.

ClickHouse computes cost on insert from a dictionary keyed by lower-cased model name
(normalize.cost_usd). This module turns genai-prices' match rules into those keys: every model
id and every exact name a rule accepts; a prefix rule contributes its prefix, which matches
once ClickHouse has cut a date or provider prefix off the model name. Models matched only by
substring or regex rules are not priced: no cost is better than a guessed one.

A user price file (JSON) overrides or adds entries:
    [{"model": "my-finetune", "input_per_mtok": 1.5, "output_per_mtok": 6.0,
      "cache_read_per_mtok": 0.15, "cache_write_per_mtok": 1.8}]
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from genai_prices import data as price_data


@dataclass(frozen=True)
class ModelPrice:
    model: str
    provider: str
    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float
    cache_write_per_mtok: float


class PriceFileError(ValueError):
    pass


def _number(value) -> float:
    """genai-prices gives a Decimal, or tiers (take the base price), or nothing."""
    if value is None:
        return 0.0
    if isinstance(value, Decimal | int | float):
        return float(value)
    base = getattr(value, "base", None)
    return float(base) if base is not None else 0.0


def _current_price(model):
    """A model's price now: a plain ModelPrice, or the newest of its conditional prices."""
    prices = model.prices
    if isinstance(prices, list):
        return prices[-1].prices if prices else None
    return prices


def _exact_names(clause) -> list[str]:
    names = []
    for attr in ("equals", "starts_with"):
        if getattr(clause, attr, None):
            names.append(getattr(clause, attr))
    for attr in ("or_", "and_"):
        for sub in getattr(clause, attr, None) or ():
            names += _exact_names(sub)
    return names


# Model makers, whose own price list wins when resellers list the same model name.
FIRST_PARTY = ("openai", "anthropic", "google", "mistral", "cohere", "deepseek", "x-ai", "meta", "amazon",
               "alibaba", "moonshotai", "perplexity")


def _provider_rank(provider) -> tuple[int, str]:
    return (FIRST_PARTY.index(provider.id) if provider.id in FIRST_PARTY else len(FIRST_PARTY), provider.id)


def bundled_prices() -> list[ModelPrice]:
    """Prices of every model genai-prices knows.

    When several providers list a model name, the model maker's price wins, and a priced entry
    always wins over a free one (free tiers of resellers would otherwise hide real prices).
    """
    by_model: dict[str, ModelPrice] = {}
    for provider in sorted(price_data.providers, key=_provider_rank):
        for model in provider.models:
            price = _current_price(model)
            if price is None:
                continue
            entry = dict(
                provider=provider.id,
                input_per_mtok=_number(price.input_mtok),
                output_per_mtok=_number(price.output_mtok),
                cache_read_per_mtok=_number(getattr(price, "cache_read_mtok", None)),
                cache_write_per_mtok=_number(getattr(price, "cache_write_mtok", None)),
            )
            for name in {model.id, *_exact_names(model.match)}:
                key = name.lower()
                candidate, known = ModelPrice(model=key, **entry), by_model.get(key)
                if known is None or (_is_free(known) and not _is_free(candidate)):
                    by_model[key] = candidate
    return list(by_model.values())


def _is_free(price: ModelPrice) -> bool:
    return price.input_per_mtok == 0 and price.output_per_mtok == 0


def load_price_file(path: Path) -> list[ModelPrice]:
    try:
        entries = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PriceFileError(f"cannot read price file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PriceFileError(f"price file {path} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise PriceFileError(f"price file {path} must hold a JSON list of {{\"model\": …}} objects")
    prices = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not entry["model"]:
            raise PriceFileError(f"price file {path}, entry {i}: needs a non-empty \"model\" string")
        try:
            prices.append(ModelPrice(
                model=entry["model"].lower(), provider=str(entry.get("provider", "")),
                **{f: float(entry.get(f, 0.0)) for f in
                   ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")},
            ))
        except (TypeError, ValueError):
            raise PriceFileError(f"price file {path}, entry {i}: prices must be numbers (USD per million tokens)") from None
    return prices


def price_table(price_file: Path | None = None) -> list[ModelPrice]:
    prices = {p.model: p for p in bundled_prices()}
    if price_file is not None:
        prices.update({p.model: p for p in load_price_file(price_file)})
    return sorted(prices.values(), key=lambda p: p.model)
