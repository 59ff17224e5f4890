"""Training hooks: one small class per concern, called by the loop (detect/engine/loop.py) at named
events (detect/engine/hooks/base.py). Their order is the list in detect/engine/fit.py."""

from detect.engine.hooks.base import EVENTS, Hook

__all__ = ["EVENTS", "Hook"]
