"""Controllable image-generation studio: a Gradio UI and named API over one shared backend."""

__version__ = "0.1.0"
