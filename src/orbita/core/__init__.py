"""Settings, clock, ids and errors: the base every other layer stands on."""
