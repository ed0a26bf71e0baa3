"""The ``adapterhub`` command line: a thin face over ``adapterhub.app.AdapterHub``."""
