"""Simulated communities: realistic, correctly signed deliveries for the gateway.

``behaviours`` draws platform-neutral actions per behaviour, ``render`` shapes them
as each platform's webhook deliveries (or canonical events for the generic API),
``generate`` plans N communities, ``send`` posts requests to a gateway and
``command`` is ``pulse simulate``. Everything but ``send`` is pure and seeded.
"""
