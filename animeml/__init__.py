"""Shared code of the anime ML pipeline: what more than one numbered step needs."""
