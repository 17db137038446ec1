"""`autolog()`: turn on every instrumentor whose library is installed."""
from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Iterable

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from tracehouse.instrumentation import config

logger = logging.getLogger("tracehouse.instrumentation")

# name -> (module that must be importable, instrumentor). Instrumentor modules are imported
# only when their library is present, so `import tracehouse` never imports openai & co.
INSTRUMENTORS = {
    "openai": ("openai", "tracehouse.instrumentation.openai", "OpenAIInstrumentor"),
    "anthropic": ("anthropic", "tracehouse.instrumentation.anthropic", "AnthropicInstrumentor"),
    "langchain": ("langchain_core", "tracehouse.instrumentation.langchain", "LangChainInstrumentor"),
    "llama_index": ("llama_index.core", "tracehouse.instrumentation.llama_index", "LlamaIndexInstrumentor"),
}


def autolog(capture_content: bool = True, disable: bool = False, exclude: Iterable[str] = ()) -> list[str]:
    """Instrument every supported library that is installed, and set up export.

    Returns the names of the instrumentors that are on afterwards. Calling it again is
    harmless; `disable=True` turns them all off and restores the libraries' own methods.
    """
    unknown = set(exclude) - INSTRUMENTORS.keys()
    if unknown:
        raise ValueError(f"unknown instrumentors in exclude: {sorted(unknown)}; known: {sorted(INSTRUMENTORS)}")
    if disable:
        for name in INSTRUMENTORS:
            instrumentor = _instrumentor_if_installed(name)
            if instrumentor is not None and instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
        return []
    config.set_capture_content(capture_content)
    provider = config.tracer_provider()
    enabled = []
    for name in INSTRUMENTORS:
        if name in exclude:
            continue
        instrumentor = _instrumentor_if_installed(name)
        if instrumentor is None:
            continue
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
        enabled.append(name)
    logger.debug("tracehouse: autolog enabled %s", enabled)
    return enabled


def _instrumentor_if_installed(name: str) -> BaseInstrumentor | None:
    library, module_name, class_name = INSTRUMENTORS[name]
    try:
        if importlib.util.find_spec(library) is None:
            return None
    except ModuleNotFoundError:  # the parent of a dotted name (llama_index) is missing
        return None
    # BaseInstrumentor is a singleton per class, so this is the instance instrumented before.
    return getattr(importlib.import_module(module_name), class_name)()
