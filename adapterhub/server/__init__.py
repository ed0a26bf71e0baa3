"""``adapterhub serve``: a Hugging Face-compatible hub and a REST API over the ``AdapterHub`` facade."""

from adapterhub.server.app import create_app, serve

__all__ = ["create_app", "serve"]
