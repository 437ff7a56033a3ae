"""Generated stores: seeded, pure simulations of customers, their events and their responses.

Nothing here does I/O or reads a clock: a store yields columnar records chunk by chunk
(`orbita.services.generate` writes them), and `sample_response` / `sample_responses` tell
how customers answer a message, with the true effect the truth file lists.
"""

from orbita.simulation.records import Chunk, CustomerBatch, EventBatch, LatentStates
from orbita.simulation.response import (
    CAMPAIGNS,
    Campaign,
    CustomerState,
    Response,
    Responses,
    sample_response,
    sample_responses,
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
    "Responses",
    "Store",
    "make_store",
    "sample_response",
    "sample_responses",
    "state_of",
    "user_id",
]
