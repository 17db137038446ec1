"""tracehouse: an OpenTelemetry-native trace collector and backend for GenAI applications."""

__version__ = "0.1.0"
