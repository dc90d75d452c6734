"""Trim LiteLLM's model price table to what aiofast bundles.

Usage: python scripts/trim_prices.py SOURCE.json python/aiofast/data/model_prices.json

Keeps the text models (modes chat, completion, responses, embedding) and the fields that
aiofast.prices reads, one model per line so that updates diff well.
"""

from __future__ import annotations

import json
import sys

MODES = {"chat", "completion", "responses", "embedding"}
FIELDS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "output_cost_per_reasoning_token",
    "max_input_tokens",
    "max_output_tokens",
    "litellm_provider",
    "mode",
)


def main(source: str, target: str) -> None:
    with open(source, encoding="utf-8") as f:
        table = json.load(f)
    trimmed = {
        model: {field: entry[field] for field in FIELDS if field in entry}
        for model, entry in sorted(table.items())
        if model != "sample_spec" and isinstance(entry, dict) and entry.get("mode") in MODES
    }
    lines = [f"{json.dumps(model)}: {json.dumps(entry)}" for model, entry in trimmed.items()]
    with open(target, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
