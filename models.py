"""The models module of the design card: re-exports flowercam.models."""

from flowercam.models import *  # noqa: F401,F403
