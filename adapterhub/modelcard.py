from adapterhub.hubformat.modelcard import CardInfo, parse_card, render_card, split_front_matter, validate_card  # noqa: F401  # TEMP shim for app/ (lead removes)
