"""The bottom layer: the wire protocol, seeded random streams, field checks and atomic files.

Imports only the standard library and torch; every other package of the project may import it, and it
imports none of them.
"""
