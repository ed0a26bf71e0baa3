"""Routers: from a query (text, embedding or hidden state) to mixture weights over catalog adapters.

- :mod:`~adapterhub.route.base`: parameter checks and the top-k softmax every router ends with.
"""

from adapterhub.route.base import MAX_QUERY_CHARS, check_route_params, top_k_softmax

__all__ = ["MAX_QUERY_CHARS", "check_route_params", "top_k_softmax"]
