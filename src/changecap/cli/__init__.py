"""The ``changecap`` command line."""
