"""inferkit inside other serving frameworks; each module needs its own extra.

* :mod:`inferkit.integrations.ray_serve`: a Ray Serve deployment (``inferkit[ray]``).
"""
