# Written by make from VERSION at the root of the repository, the one place
# the version is written: do not edit.
__version__ = "0.1.0"
