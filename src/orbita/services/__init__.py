"""Use cases that combine the engine and the stores: ingest, customers, import, generate…"""
