"""Errors routes raise; `main.py` turns them into JSON answers with a `message`."""


class RequestError(ValueError):
    """The request is well-formed JSON but asks for something impossible; says which field.
    Answered with 400."""


class NotFound(LookupError):
    """The request names something this server does not have (a dataset, a node's record).
    Answered with 404."""


class ServiceUnavailable(Exception):
    """The server was started without what this route needs (a model, datasets, an LLM).
    Answered with 503."""
