"""datagen: self-instruct instruction-tuning data, generated, curated and exported."""

__version__ = "0.1.0"
