"""Generated stores: seeded, pure simulations of customers, their events and their responses.

Nothing here does I/O or reads a clock: a store yields columnar records chunk by chunk
(`orbita.services.generate` writes them), and `sample_response` tells how a customer
answers a message, with the true effect the truth file lists.
"""

from orbita.simulation.records import Chunk, CustomerBatch, EventBatch, LatentStates
from orbita.simulation.response import (
    CAMPAIGNS,
    Campaign,
    CustomerState,
    Response,
    sample_response,
    state_of,
)
from orbita.simulation.stores import CHUNK, STORES, Store, make_store, user_id

__all__ = [
    "CAMPAIGNS",
    "CHUNK",
    "STORES",
    "Campaign",
    "Chunk",
    "CustomerBatch",
    "CustomerState",
    "EventBatch",
    "LatentStates",
    "Response",
    "Store",
    "make_store",
    "sample_response",
    "state_of",
    "user_id",
]
